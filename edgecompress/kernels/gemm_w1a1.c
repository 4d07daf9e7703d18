/*
 * W1A1 GEMM: XOR-popcount dot products of packed +-1 rows (pack.c's encoding).
 *
 * For +-1 vectors a, w of length K:  a . w = K - 2 popcount(a XOR w). With a per-row validity
 * mask (bits of positions that exist, e.g. not convolution padding):
 *     a . w = popcount(mask) - 2 popcount((a XOR w) AND mask),
 * so  C[m, n] = valid(m) - 2 popcount((A[m] ^ B[n]) & mask[m]), valid(m) = popcount(mask[m]) or k.
 *
 * B is given in panels of PANEL = 16 columns: panel p holds, for every word w, the 16 words
 * B[16 p + 0 .. 15][w] side by side (missing columns are 0). The tile kernels keep R = 4 rows x
 * 16 columns of popcount sums in registers and walk the words once: for each word, the A word of
 * each row is broadcast and XORed (XOR-AND with the mask) with the 16 B words, so no horizontal
 * reduction is ever needed; a store kernel (gemm_w1a1_store.c) then writes the tile. Threads
 * take blocks of rows; B is walked in cache-sized blocks of panels (see gemm_block_bytes), each
 * reused by every row block from L2.
 *
 * Three tile kernels: AVX-512 with VPOPCNTQ, AVX2 (nibble lookup beside scalar POPCNT), and
 * portable scalar code. Every path gives bit-identical results (integer arithmetic, then the
 * same rounded float operations in the store).
 */
#include "gemm_w1a1.h"
#include "im2col.h"

/* Where the words of a row of A are: `count` runs of `words` words, run s at a[r] + off[s]
 * (mask words likewise), meeting B words s * words .. s * words + words - 1. A stored row is one
 * run; a convolution window read in place is one run per kernel row (or per tap when dilated).
 * rel (NULL for one run): the same as one list, word i of the row at a[r] + rel[i], which the
 * AVX2 and AVX-512 tiles walk in one loop (a 3x3 window of 64 channels is 3 runs of 3 words:
 * the nested loops cost 5-8 % at ResNet-18's first stages on AMD Zen 1 (AVX2) and 4-7 % on
 * Zen 5 (AVX-512)). */
typedef struct {
    const int64_t *off;
    int64_t count, words;
    const int64_t *rel;
} row_runs;

/* A tile kernel: R rows (a[r]) against one panel; m NULL (no masks) or the rows' masks, where
 * the scalar and AVX2 tiles also take m[r] NULL for a row without one (see load_rows). */
typedef void (*tile_kernel)(const uint64_t *const *a, const uint64_t *const *m,
                            const uint64_t *bp, const row_runs *runs, int64_t acc[R][PANEL]);

static void tile_scalar(const uint64_t *const *a, const uint64_t *const *m, const uint64_t *bp,
                        const row_runs *runs, int64_t acc[R][PANEL]) {
    for (int r = 0; r < R; r++)
        for (int j = 0; j < PANEL; j++) acc[r][j] = 0;
    for (int64_t s = 0; s < runs->count; s++) {
        const int64_t off = runs->off[s];
        for (int64_t w = 0; w < runs->words; w++) {
            const uint64_t *b = bp + (s * runs->words + w) * PANEL;
            for (int r = 0; r < R; r++) {
                const uint64_t aw = a[r][off + w];
                const uint64_t mw = m && m[r] ? m[r][off + w] : ~(uint64_t)0;
                for (int j = 0; j < PANEL; j++)
                    acc[r][j] += ec_popcount64((aw ^ b[j]) & mw);
            }
        }
    }
}

#ifdef EC_X86
/* AVX2 (with POPCNT): one row at a time, columns 0-7 by the nibble lookup in two vectors and
 * columns 8-15 by scalar POPCNT in the same loop, so the vector pipes and the integer ALUs work
 * side by side (on AMD Zen 1, which splits 256-bit operations in two, as fast as the better of
 * a vector-only and a scalar-only tile with masks and without; 12 + 4 columns was slower). The
 * lookup's byte counts (at most 8 per word) are summed as bytes over up to 31 words, then into
 * 64-bit lanes by VPSADBW. All integer sums: the same counts in any order. */
#define EC_LOOKUP_WORDS 31
/* one row of the tile (acc: its 16 sums), with or without its mask (MASKED a constant: the
 * unmasked row has no AND at all, a fifth of its integer work) */
__attribute__((target("avx2,popcnt"), always_inline))
static inline void tile_avx2_row(const uint64_t *a, const uint64_t *m, const uint64_t *bp,
                                 const row_runs *runs, int64_t acc[PANEL], const int MASKED) {
    const __m256i zero = _mm256_setzero_si256();
    __m256i t0 = zero, t1 = zero, c0 = zero, c1 = zero;  /* 64-bit totals, byte counts */
    uint64_t s[PANEL / 2] = {0};                          /* columns 8-15 */
    int n = 0;
    const int64_t total = runs->count * runs->words, *rel = runs->rel;
    const uint64_t *b = bp;
    /* word i of the row: a[AT], meeting B words b[0 .. 15] */
#define EC_WORD(AT)                                                                           \
    {                                                                                         \
        const uint64_t aw = a[AT], mw = MASKED ? m[AT] : ~(uint64_t)0;                        \
        if (MASKED && mw == 0) continue; /* a padding word adds nothing */                    \
        const __m256i av = _mm256_set1_epi64x((long long)aw);                                 \
        __m256i x0 = _mm256_xor_si256(av, _mm256_loadu_si256((const __m256i *)b));           \
        __m256i x1 = _mm256_xor_si256(av, _mm256_loadu_si256((const __m256i *)(b + 4)));     \
        if (MASKED) {                                                                         \
            const __m256i mv = _mm256_set1_epi64x((long long)mw);                             \
            x0 = _mm256_and_si256(x0, mv);                                                    \
            x1 = _mm256_and_si256(x1, mv);                                                    \
        }                                                                                     \
        c0 = _mm256_add_epi8(c0, popcnt_bytes256(x0));                                        \
        c1 = _mm256_add_epi8(c1, popcnt_bytes256(x1));                                        \
        for (int j = 0; j < PANEL / 2; j++) {                                                 \
            const uint64_t x = aw ^ b[PANEL / 2 + j];                                         \
            s[j] += (uint64_t)__builtin_popcountll(MASKED ? x & mw : x);                      \
        }                                                                                     \
        if (++n == EC_LOOKUP_WORDS) {                                                         \
            t0 = _mm256_add_epi64(t0, _mm256_sad_epu8(c0, zero));                             \
            t1 = _mm256_add_epi64(t1, _mm256_sad_epu8(c1, zero));                             \
            c0 = c1 = zero;                                                                   \
            n = 0;                                                                            \
        }                                                                                     \
    }
    if (rel)
        for (int64_t i = 0; i < total; i++, b += PANEL) EC_WORD(rel[i])
    else  /* one run: the words in place */
        for (int64_t i = 0; i < total; i++, b += PANEL) EC_WORD(runs->off[0] + i)
#undef EC_WORD
    t0 = _mm256_add_epi64(t0, _mm256_sad_epu8(c0, zero));
    t1 = _mm256_add_epi64(t1, _mm256_sad_epu8(c1, zero));
    _mm256_storeu_si256((__m256i *)&acc[0], t0);
    _mm256_storeu_si256((__m256i *)&acc[4], t1);
    for (int j = 0; j < PANEL / 2; j++) acc[PANEL / 2 + j] = (int64_t)s[j];
}

/* rows one at a time, each masked only if it has a mask */
__attribute__((target("avx2,popcnt")))
static void tile_avx2(const uint64_t *const *a, const uint64_t *const *m, const uint64_t *bp,
                      const row_runs *runs, int64_t acc[R][PANEL]) {
    for (int r = 0; r < R; r++) {
        if (m && m[r]) tile_avx2_row(a[r], m[r], bp, runs, acc[r], 1);
        else tile_avx2_row(a[r], NULL, bp, runs, acc[r], 0);
    }
}
#undef EC_LOOKUP_WORDS

/* AVX-512: VPOPCNTQ; VPTERNLOGQ computes (a ^ b) & mask in one instruction. The row's words
 * are walked in one loop, through rel when a window has several runs (as the AVX2 tile). */
__attribute__((target("avx512f,avx512vpopcntdq")))
static void tile_avx512(const uint64_t *const *a, const uint64_t *const *m, const uint64_t *bp,
                        const row_runs *runs, int64_t acc[R][PANEL]) {
    __m512i s00 = _mm512_setzero_si512(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00,
            s30 = s00, s31 = s00;
    const int64_t total = runs->count * runs->words, *rel = runs->rel;
    const int64_t base = rel ? 0 : runs->off[0];
    const uint64_t *a0 = a[0] + base, *a1 = a[1] + base, *a2 = a[2] + base, *a3 = a[3] + base;
    /* word i of the rows: ar[AT], meeting B words b[0 .. 15] */
#define EC_WORDS(AT, MASKED)                                                                  \
    for (int64_t i = 0; i < total; i++) {                                                     \
        const int64_t at = AT;                                                                \
        const uint64_t *b = bp + i * PANEL;                                                   \
        const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 8);             \
        EC_ROW(a0, 0, s00, s01, MASKED) EC_ROW(a1, 1, s10, s11, MASKED)                       \
        EC_ROW(a2, 2, s20, s21, MASKED) EC_ROW(a3, 3, s30, s31, MASKED)                       \
    }
#define EC_ROW(ar, r, sa, sb, MASKED) {                                                       \
        const __m512i av = _mm512_set1_epi64((long long)ar[at]);                              \
        __m512i x0, x1;                                                                       \
        if (MASKED) {                                                                         \
            const __m512i mv = _mm512_set1_epi64((long long)m[r][base + at]);                 \
            x0 = _mm512_ternarylogic_epi64(av, b0, mv, 0x28);                                 \
            x1 = _mm512_ternarylogic_epi64(av, b1, mv, 0x28);                                 \
        } else {                                                                              \
            x0 = _mm512_xor_si512(av, b0);                                                    \
            x1 = _mm512_xor_si512(av, b1);                                                    \
        }                                                                                     \
        sa = _mm512_add_epi64(sa, _mm512_popcnt_epi64(x0));                                   \
        sb = _mm512_add_epi64(sb, _mm512_popcnt_epi64(x1)); }
    if (m) {
        if (rel) EC_WORDS(rel[i], 1) else EC_WORDS(i, 1)
    } else {
        if (rel) EC_WORDS(rel[i], 0) else EC_WORDS(i, 0)
    }
#undef EC_ROW
#undef EC_WORDS
    _mm512_storeu_si512(&acc[0][0], s00); _mm512_storeu_si512(&acc[0][8], s01);
    _mm512_storeu_si512(&acc[1][0], s10); _mm512_storeu_si512(&acc[1][8], s11);
    _mm512_storeu_si512(&acc[2][0], s20); _mm512_storeu_si512(&acc[2][8], s21);
    _mm512_storeu_si512(&acc[3][0], s30); _mm512_storeu_si512(&acc[3][8], s31);
}
#endif

/* Rearrange row-packed B (n x kw) into panels (ceil(n / 16) x kw x 16), zero-filled. */
EC_EXPORT void ec_pack_panels(const uint64_t *b, int64_t n, int64_t kw, uint64_t *out) {
    const int64_t panels = (n + PANEL - 1) / PANEL;
    for (int64_t p = 0; p < panels; p++)
        for (int64_t w = 0; w < kw; w++)
            for (int64_t j = 0; j < PANEL; j++) {
                const int64_t col = p * PANEL + j;
                out[(p * kw + w) * PANEL + j] = col < n ? b[col * kw + w] : 0;
            }
}

/* Cache blocking: the panels are walked in blocks of at most this many bytes (default 256 KiB,
 * a share of L2 on current x86 cores), each block against every row block before the next, so a
 * block is read from L2 while the rows stream past it; the row blocks of a thread stay in L1. */
static int64_t gemm_block_bytes = 256 * 1024;

EC_EXPORT void ec_set_gemm_block_bytes(int64_t bytes) { gemm_block_bytes = bytes > 0 ? bytes : 1; }

/* Padding by correction (ec_binary_conv): the windows are read in place from a copy of the
 * packed pixels with a border of zero words (+1 values), and each output pixel's sums lose what
 * its padding taps added, popcount(B's words at those taps) per column, its valid count being
 * the taps inside the image x channels: the masked sums of a gathered row, without gathering.
 * An output pixel's padding taps are those of its row class (ry[oy]: which kernel rows fall
 * outside the image) and column class (cx[ox]); class ry * ncx + cx. */
typedef struct {
    const int32_t *ry, *cx;  /* class of each output row / column */
    int64_t ncx, n;
    const int32_t *valid;    /* per class: valid positions (k where it has no padding taps) */
    const int64_t *corr;     /* per class: n column sums to subtract */
} pad_fix;

/* The rows of A: stored rows (a, and mask or NULL: M x kw words), or, when conv is set, the
 * windows of a convolution read in place from its packed pixels a (implicit GEMM): `window`
 * gives the runs of a window from its top-left word; fix (or NULL): the padding correction,
 * a then holding the zero-bordered pixels and conv their geometry without padding. */
typedef struct {
    const uint64_t *a, *mask;
    const conv_window *conv;
    row_runs window;
    const pad_fix *fix;
} gemm_rows;

static const int64_t no_offset = 0;

/* Whether a row's mask changes nothing: every bit the row or any column of B (bbits: the OR of
 * B's columns, kw words) may set lies inside the mask, so (a ^ b) & mask == a ^ b for every
 * column (e.g. im2col rows of pixels inside the image, whose masks hold every channel bit).
 * Then the row runs without its mask (on AVX2 the masks' ANDs are a fifth of the work) and the
 * same integers come out; the valid counts still come from the masks. */
static int mask_redundant(const uint64_t *ar, const uint64_t *mr, const uint64_t *bbits,
                          int64_t kw) {
    for (int64_t w = 0; w < kw; w++)
        if ((ar[w] | bbits[w]) & ~mr[w]) return 0;
    return 1;
}

/* Row block rb: the R row pointers (rows past m: a zero row, or for windows any real one,
 * since the store skips them), their masks, valid counts and runs; returns whether the masks
 * apply: not where every real row's mask is redundant (mask_redundant, given bbits); with
 * per_row (a tile that takes a NULL mask per row), mr[r] is NULL for each row whose mask is
 * redundant and for the rows past m. A block of windows that all lie inside the image is read
 * in place; a block that touches the padding is gathered into `gather` (R rows, then R mask
 * rows, of kw words) by the im2col code, with the same masks as the im2col path. */
static int load_rows(const gemm_rows *src, int64_t rb, int64_t m, int64_t kw, int64_t k,
                     const uint64_t *pad, const uint64_t *bbits, int per_row, uint64_t *gather,
                     const uint64_t *ar[R], const uint64_t *mr[R], int32_t valid[R],
                     row_runs *runs) {
    *runs = (row_runs){&no_offset, 1, kw, NULL};
    for (int r = 0; r < R; r++) valid[r] = (int32_t)k;
    if (src->conv) {
        const conv_pixel first = conv_pixel_of(src->conv, rb * R);
        conv_pixel p = first;
        int inside = 1;
        for (int r = 0; r < R && inside; r++) {
            ar[r] = ec_window_inside(src->conv, src->a, p);
            inside = ar[r] != NULL;
            if (rb * R + r + 1 < m) conv_pixel_next(src->conv, &p);
        }
        if (inside) {
            *runs = src->window;
            return 0;
        }
        p = first;
        for (int r = 0; r < R; r++) {
            uint64_t *row = gather + r * kw, *mrow = gather + (R + r) * kw;
            if (rb * R + r < m) {
                ec_window_row(src->conv, src->a, p, row, mrow);
                conv_pixel_next(src->conv, &p);
            } else {
                memset(row, 0, (size_t)kw * sizeof(uint64_t));
                memset(mrow, 0, (size_t)kw * sizeof(uint64_t));
            }
            ar[r] = row;
            mr[r] = mrow;
        }
    } else {
        for (int r = 0; r < R; r++) {
            const int64_t i = rb * R + r;
            ar[r] = i < m ? src->a + i * kw : pad;
            mr[r] = src->mask ? (i < m ? src->mask + i * kw : pad) : NULL;
        }
        if (!src->mask) return 0;
    }
    int masked = 0;
    for (int r = 0; r < R; r++) {
        if (rb * R + r >= m) {
            if (per_row) mr[r] = NULL;
            continue;
        }
        int64_t v = 0;
        for (int64_t w = 0; w < kw; w++) v += ec_popcount64(mr[r][w]);
        valid[r] = (int32_t)v;
        if (!(bbits && mask_redundant(ar[r], mr[r], bbits, kw))) masked = 1;
        else if (per_row) mr[r] = NULL;
    }
    return masked;
}

/* The fixed operands of one GEMM (see gemm_run). */
typedef struct {
    const gemm_rows *src;
    const uint64_t *bp, *pad, *bbits;  /* bbits: the OR of B's columns (see mask_redundant) */
    int64_t m, n, kw, k, panels;
    int per_row;                       /* the tile takes a NULL mask per row (load_rows) */
    const epilogue *out;
    tile_kernel kernel;
    store_kernel store;
} gemm_job;

/* Row block rb of the GEMM against panels [p0, p1) (gather: this thread's conv rows buffer). */
static void gemm_row_block(const gemm_job *j, int64_t rb, int64_t p0, int64_t p1,
                           uint64_t *gather) {
    const uint64_t *ar[R], *mr[R];
    int32_t valid[R];
    row_runs runs;
    const int masked = load_rows(j->src, rb, j->m, j->kw, j->k, j->pad, j->bbits, j->per_row,
                                 gather, ar, mr, valid, &runs);
    /* the residual of the next row block, requested now: its store loop adds it, and a
     * block's float input may be out of cache by then (on a Zen 5, a stage-0 convolution whose
     * residual came from memory ran 1.4-2.2x faster; a frozen ResNet-18 at batch 8 run whole,
     * without chunking, 9-10 % faster on 1 thread; in cache-sized chunks, the default, the
     * same) */
    if (j->out->res)
        for (int64_t r = (rb + 1) * R; r < (rb + 2) * R && r < j->m; r++)
            for (int64_t c = p0 * PANEL; c < p1 * PANEL && c < j->n; c += 16)
                __builtin_prefetch(j->out->res + r * j->out->ldc + c, 0, 1);
    const pad_fix *fix = j->src->fix;
    int64_t cls[R];  /* each row's padding class, or -1 (none, or a row past m) */
    if (fix) {
        conv_pixel px = conv_pixel_of(j->src->conv, rb * R);
        for (int r = 0; r < R; r++) {
            cls[r] = -1;
            if (rb * R + r >= j->m) continue;
            const int64_t c = fix->ry[px.y] * fix->ncx + fix->cx[px.x];
            if (fix->valid[c] != j->k) {  /* it has padding taps */
                cls[r] = c;
                valid[r] = fix->valid[c];
            }
            conv_pixel_next(j->src->conv, &px);
        }
    }
    int64_t acc[R][PANEL];
    for (int64_t p = p0; p < p1; p++) {
        j->kernel(ar, masked ? mr : NULL, j->bp + p * j->kw * PANEL, &runs, acc);
        const int cols = (p + 1) * PANEL <= j->n ? PANEL : (int)(j->n - p * PANEL);
        for (int r = 0; fix && r < R; r++)
            if (cls[r] >= 0) {
                const int64_t *corr = fix->corr + cls[r] * fix->n + p * PANEL;
                if (cols == PANEL)  /* a fixed count: vectorized */
                    for (int c = 0; c < PANEL; c++) acc[r][c] -= corr[c];
                else
                    for (int c = 0; c < cols; c++) acc[r][c] -= corr[c];
            }
        j->store(j->out, acc, valid, rb * R, p * PANEL, (int)(j->m - rb * R), cols);
    }
}

/* One GEMM on `threads` threads, with a resolved tile and store kernel (see ec_binary_gemm). */
static int gemm_run(const gemm_rows *src, const uint64_t *bp, int64_t m, int64_t n, int64_t kw,
                    int64_t k, const epilogue *out, tile_kernel kernel, store_kernel store,
                    int threads) {
    /* an all-zero row stands in for the rows past the end of the last row block; then the OR
     * of B's columns, for mask_redundant (rows with masks: stored ones, or windows gathered at
     * the padding when it is not corrected for) */
    uint64_t *pad = calloc((size_t)(2 * (kw > 0 ? kw : 1)), sizeof(uint64_t));
    if (pad == NULL) return EC_OUT_OF_MEMORY;
    uint64_t *bbits = src->mask || (src->conv && !src->fix) ? pad + (kw > 0 ? kw : 1) : NULL;
    const int64_t panels = (n + PANEL - 1) / PANEL;
    for (int64_t p = 0; bbits && p < panels; p++)
        for (int64_t w = 0; w < kw; w++)
            for (int j = 0; j < PANEL; j++) bbits[w] |= bp[(p * kw + w) * PANEL + j];
#ifdef EC_X86
    const int per_row = kernel != tile_avx512;  /* the AVX-512 tile masks its 4 rows together */
#else
    const int per_row = 1;
#endif
    const gemm_job job = {src, bp, pad, bbits, m, n, kw, k, panels, per_row, out, kernel,
                          store};
    const int64_t row_blocks = (m + R - 1) / R;
    const int64_t panel_bytes = (kw > 0 ? kw : 1) * PANEL * 8;
    const int64_t block = gemm_block_bytes / panel_bytes > 0 ? gemm_block_bytes / panel_bytes : 1;
    const size_t gather_words = (size_t)(2 * R * (kw > 0 ? kw : 1));
    int status = EC_OK;
    if (threads > 1 && m * n * kw > 32768) {
#pragma omp parallel num_threads(threads)
        {
            uint64_t *gather = NULL;
            if (src->conv) {
                gather = malloc(gather_words * sizeof(uint64_t));
                if (gather == NULL) {
#pragma omp atomic write
                    status = EC_OUT_OF_MEMORY;
                }
            }
            for (int64_t p0 = 0; p0 < job.panels; p0 += block) {
                const int64_t p1 = p0 + block < job.panels ? p0 + block : job.panels;
#pragma omp for schedule(static)
                for (int64_t rb = 0; rb < row_blocks; rb++)
                    if (!src->conv || gather != NULL) gemm_row_block(&job, rb, p0, p1, gather);
            }
            free(gather);
        }
    } else {  /* one thread: no parallel region (entering one costs about a microsecond) */
        uint64_t *gather = src->conv ? malloc(gather_words * sizeof(uint64_t)) : NULL;
        if (src->conv && gather == NULL) status = EC_OUT_OF_MEMORY;
        else
            for (int64_t p0 = 0; p0 < job.panels; p0 += block)
                for (int64_t rb = 0; rb < row_blocks; rb++)
                    gemm_row_block(&job, rb, p0, p0 + block < job.panels ? p0 + block
                                                                          : job.panels, gather);
        free(gather);
    }
    free(pad);
    return status;
}

/*
 * A: M x kw packed rows; mask: M x kw packed validity bits, or NULL (then k, the number of
 * values per row, is valid(m)); bp: the N columns of B as panels from ec_pack_panels.
 * Outputs (see the epilogue struct in gemm_w1a1.h), the unused ones NULL:
 *   c:         M x N int32 dot products;  or
 *   cf and/or cs:  the affine epilogue (gemm_w1a1_store.c)
 *       v[i, j] = (float)C[i, j] * scale[j] + bias[j]  (scale / bias may be NULL: 1 / 0),
 *       then + res[i, j] (M x N float, may be NULL) and, if clamp, a clamp to [lo, hi];
 *     cf:  M x N float32 values v;
 *     cs:  the signs of v packed like ec_pack_signs (M rows of ceil(N / 64) words, bit 1 where
 *          v < 0) - what the next binary layer needs, without writing or re-reading the floats.
 */
EC_EXPORT int ec_binary_gemm(const uint64_t *a, const uint64_t *mask, const uint64_t *bp,
                             int64_t m, int64_t n, int64_t kw, int64_t k, int32_t *c,
                             float *cf, uint64_t *cs, const float *scale, const float *bias,
                             const float *res, int clamp, float lo, float hi,
                             int path, int threads) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    const epilogue out = {c, cf, cs, scale, bias, res, clamp, lo, hi, n, (n + 63) / 64};
    const gemm_rows rows = {a, mask, NULL, {&no_offset, 1, kw, NULL}};
    return gemm_run(&rows, bp, m, n, kw, k, &out, EC_PICK(path, tile_scalar, tile_avx2,
                    tile_avx512), ec_w1a1_store_for(path), ec_threads(threads));
}

/*
 * A batch of independent GEMMs of the same shape, e.g. q k^T of every (sample, head) of binary
 * attention: for g < groups, cf[g] (M x N float32) = (float)(A[g] . B[g]) * scale[j], with A[g]
 * (M x kw) and B[g] (N x kw) row-packed (B[g] is put into panels here, per group). Threads take
 * whole groups.
 */
EC_EXPORT int ec_binary_gemm_groups(const uint64_t *a, const uint64_t *b, int64_t groups,
                                    int64_t m, int64_t n, int64_t kw, int64_t k, float *cf,
                                    const float *scale, int path, int threads) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    const tile_kernel kernel = EC_PICK(path, tile_scalar, tile_avx2, tile_avx512);
    const store_kernel store = ec_w1a1_store_for(path);
    const int64_t panel_words = (n + PANEL - 1) / PANEL * kw * PANEL;
    int status = EC_OK;
#pragma omp parallel num_threads(ec_threads(threads)) if (groups > 1 && groups * m * n * kw > 32768)
    {
        uint64_t *bp = malloc((size_t)(panel_words > 0 ? panel_words : 1) * sizeof(uint64_t));
        if (bp == NULL) {
#pragma omp atomic write
            status = EC_OUT_OF_MEMORY;
        }
#pragma omp for schedule(static)
        for (int64_t g = 0; g < groups; g++) {
            if (bp == NULL) continue;
            ec_pack_panels(b + g * n * kw, n, kw, bp);
            const epilogue out = {NULL, cf + g * m * n, NULL, scale, NULL, NULL, 0, 0.0f, 0.0f,
                                  n, (n + 63) / 64};
            const gemm_rows rows = {a + g * m * kw, NULL, NULL, {&no_offset, 1, kw, NULL}};
            if (gemm_run(&rows, bp, m, n, kw, k, &out, kernel, store, 1) != EC_OK) {
#pragma omp atomic write
                status = EC_OUT_OF_MEMORY;
            }
        }
        free(bp);
    }
    return status;
}

/* Where the padding correction runs: 0 on the AVX-512 path only (measured 9-14 % faster than
 * the masked gathers there; on the AVX2 path of a Zen 5, 0-15 % slower, Zen 1 not measured),
 * 1 on every path, 2 on none (tests run every path both ways). */
static int pad_correction = 0;

EC_EXPORT void ec_set_pad_correction(int mode) { pad_correction = mode; }

/* The class of each output row (or column): the mask of the kernel rows whose input row
 * oy * sh - ph + i * dh lies outside [0, size), numbered in order of first appearance; the
 * masks of the classes into masks. Returns the number of classes. */
static int64_t pad_classes(int64_t out, int64_t size, int64_t kernel, int64_t stride,
                           int64_t pad, int64_t dilation, int32_t *id, uint64_t *masks) {
    int64_t count = 0;
    for (int64_t o = 0; o < out; o++) {
        uint64_t mask = 0;
        for (int64_t i = 0; i < kernel; i++) {
            const int64_t at = o * stride - pad + i * dilation;
            if (at < 0 || at >= size) mask |= (uint64_t)1 << i;
        }
        int64_t c = 0;
        while (c < count && masks[c] != mask) c++;
        if (c == count) masks[count++] = mask;
        id[o] = (int32_t)c;
    }
    return count;
}

/* out (taps x n_out): per kernel tap and column, the popcount of B's cw words there (panels
 * of a convolution's weights, taps x cw words per column), what a zero padding word adds to
 * that column's sum. Depends on the weights only: a planned convolution computes it once. */
EC_EXPORT void ec_conv_tap_popcounts(const uint64_t *bp, int64_t n_out, int64_t taps,
                                     int64_t cw, int64_t *out) {
    for (int64_t t = 0; t < taps; t++)
        for (int64_t col = 0; col < n_out; col++) {
            const uint64_t *b = bp + ((col / PANEL) * taps * cw + t * cw) * PANEL + col % PANEL;
            int64_t sum = 0;
            for (int64_t w = 0; w < cw; w++) sum += ec_popcount64(b[w * PANEL]);
            out[t * n_out + col] = sum;
        }
}

/* The padding correction of a convolution (see pad_fix): its tables in one block *memory, and
 * the zero-bordered copy of the pixels in *padded (both malloc'd; freed by the caller);
 * tap_pop: ec_conv_tap_popcounts of bp, or NULL (computed here). */
static int pad_fix_build(const conv_window *g, const uint64_t *px, const uint64_t *bp,
                         int64_t n_out, const int64_t *tap_pop, pad_fix *fix, void **memory,
                         uint64_t **padded) {
    const int64_t cw = (g->c + 63) / 64, taps = g->kh * g->kw;
    const int64_t oh = conv_out_h(g), ow = conv_out_w(g);
    const int64_t hp = g->h + 2 * g->ph, wp = g->w + 2 * g->pw;
    uint64_t *masks = malloc((size_t)(oh + ow) * sizeof(uint64_t));  /* of the classes */
    int32_t *ids = malloc((size_t)(oh + ow) * sizeof(int32_t));
    int64_t *own = tap_pop ? NULL : malloc((size_t)(taps * n_out + 1) * sizeof(int64_t));
    *padded = malloc((size_t)(g->n * hp * wp * cw + 1) * sizeof(uint64_t));
    if (masks == NULL || ids == NULL || (tap_pop == NULL && own == NULL) || *padded == NULL) {
        free(masks);
        free(ids);
        free(own);
        free(*padded);
        return EC_OUT_OF_MEMORY;
    }
    if (own) {
        ec_conv_tap_popcounts(bp, n_out, taps, cw, own);
        tap_pop = own;
    }
    const uint64_t *rmask = masks, *cmask = masks + oh;
    const int64_t nry = pad_classes(oh, g->h, g->kh, g->sh, g->ph, g->dh, ids, masks);
    const int64_t ncx = pad_classes(ow, g->w, g->kw, g->sw, g->pw, g->dw, ids + oh, masks + oh);
    const int64_t classes = nry * ncx;
    /* one block: corrections, then row ids, column ids, valid counts */
    const size_t bytes = (size_t)(classes * n_out) * sizeof(int64_t) +
                         (size_t)(oh + ow + classes) * sizeof(int32_t);
    char *block = malloc(bytes);
    if (block == NULL) {
        free(masks);
        free(ids);
        free(own);
        free(*padded);
        return EC_OUT_OF_MEMORY;
    }
    int64_t *corr = (int64_t *)block;  /* first: 8-byte aligned */
    int32_t *ry = (int32_t *)(corr + classes * n_out), *cx = ry + oh, *valid = cx + ow;
    memcpy(ry, ids, (size_t)(oh + ow) * sizeof(int32_t));
    free(ids);
    for (int64_t a = 0; a < nry; a++)
        for (int64_t b = 0; b < ncx; b++) {
            const int64_t c = a * ncx + b;
            int64_t *out = corr + c * n_out, outside = 0;
            for (int64_t col = 0; col < n_out; col++) out[col] = 0;
            for (int64_t i = 0; i < g->kh; i++)
                for (int64_t j = 0; j < g->kw; j++) {
                    if (!((rmask[a] >> i) & 1) && !((cmask[b] >> j) & 1)) continue;
                    outside++;
                    const int64_t *pop = tap_pop + (i * g->kw + j) * n_out;
                    for (int64_t col = 0; col < n_out; col++) out[col] += pop[col];
                }
            valid[c] = (int32_t)((taps - outside) * g->c);
        }
    free(masks);
    free(own);
    /* the pixels with a border of ph rows and pw columns of zero words */
    uint64_t *dst = *padded;
    for (int64_t img = 0; img < g->n; img++)
        for (int64_t y = 0; y < hp; y++, dst += wp * cw) {
            const int64_t sy = y - g->ph;
            if (sy < 0 || sy >= g->h) {
                memset(dst, 0, (size_t)(wp * cw) * sizeof(uint64_t));
                continue;
            }
            memset(dst, 0, (size_t)(g->pw * cw) * sizeof(uint64_t));
            memcpy(dst + g->pw * cw, px + (img * g->h + sy) * g->w * cw,
                   (size_t)(g->w * cw) * sizeof(uint64_t));
            memset(dst + (g->pw + g->w) * cw, 0, (size_t)(g->pw * cw) * sizeof(uint64_t));
        }
    *fix = (pad_fix){ry, cx, ncx, n_out, valid, corr};
    *memory = block;
    return EC_OK;
}

/*
 * A binary convolution as an implicit GEMM: ec_binary_gemm on the im2col rows of packed pixels
 * px (n, h, w, ceil(c / 64) words, bits past c zero) without writing them. geometry: the 12
 * values of conv_window (n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw); bp: the panels of the
 * weights packed in im2col order (pack_conv_weights); n_out columns; outputs and epilogue as
 * ec_binary_gemm's, for M = n * oh * ow rows; tap_pop: ec_conv_tap_popcounts of bp, or NULL.
 * Windows are read in place, one run of kw * cw words per kernel row (one run of cw words per
 * tap when dilated). With padding, they are read from a copy of the pixels with a border of
 * zero words, and each output pixel's sums lose what its padding taps added (pad_fix; kernels
 * of at most 64 rows and columns; else the row blocks that touch the padding are gathered
 * with their masks), so the result equals ec_binary_gemm on ec_im2col_words' rows and mask
 * bit for bit. On Zen 5 (AVX-512), ResNet-18's padded 3x3 convolutions ran 9-14 % faster by
 * correction than gathered, at batch 1 (planned calls); the correction runs on the AVX-512
 * path (see pad_correction).
 */
EC_EXPORT int ec_binary_conv(const uint64_t *px, const int64_t *geometry, const uint64_t *bp,
                             int64_t n_out, int32_t *c, float *cf, uint64_t *cs,
                             const float *scale, const float *bias, const float *res, int clamp,
                             float lo, float hi, int path, int threads,
                             const int64_t *tap_pop) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    conv_window g;
    memcpy(&g, geometry, sizeof g);
    if (g.n < 0 || g.c < 1 || g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1 || g.ph < 0 ||
        g.pw < 0 || g.dh < 1 || g.dw < 1 || conv_out_h(&g) < 1 || conv_out_w(&g) < 1)
        return EC_BAD_ARGUMENT;
    const int64_t cw = (g.c + 63) / 64, kw = g.kh * g.kw * cw, k = g.kh * g.kw * g.c;
    const int64_t m = g.n * conv_out_h(&g) * conv_out_w(&g);
    /* padding: by correction on a zero-bordered copy (pad_fix) where the kernel's rows and
     * columns fit a 64-bit class mask (and pad_correction says so), else the windows that
     * touch it are gathered with masks */
    pad_fix fix;
    void *fix_memory = NULL;
    uint64_t *padded = NULL;
    const int correct = pad_correction == 1 || (pad_correction == 0 && path == EC_PATH_AVX512);
    if ((g.ph > 0 || g.pw > 0) && g.kh <= 64 && g.kw <= 64 && correct) {
        const int status = pad_fix_build(&g, px, bp, n_out, tap_pop, &fix, &fix_memory,
                                         &padded);
        if (status != EC_OK) return status;
        px = padded;
        g.h += 2 * g.ph;
        g.w += 2 * g.pw;
        g.ph = g.pw = 0;
    }
    const int64_t taps = g.dw == 1 ? 1 : g.kw;  /* runs per kernel row */
    const int64_t run_words = g.dw == 1 ? g.kw * cw : cw;
    int64_t *off = malloc((size_t)(g.kh * taps + kw) * sizeof(int64_t));  /* then rel */
    if (off == NULL) {
        free(fix_memory);
        free(padded);
        return EC_OUT_OF_MEMORY;
    }
    int64_t *rel = off + g.kh * taps;
    for (int64_t i = 0; i < g.kh; i++)
        for (int64_t j = 0; j < taps; j++) off[i * taps + j] = (i * g.dh * g.w + j * g.dw) * cw;
    for (int64_t r = 0; r < g.kh * taps; r++)
        for (int64_t w = 0; w < run_words; w++) rel[r * run_words + w] = off[r] + w;
    const gemm_rows rows = {px, NULL, &g, {off, g.kh * taps, run_words, rel},
                            padded ? &fix : NULL};
    const epilogue out = {c, cf, cs, scale, bias, res, clamp, lo, hi, n_out, (n_out + 63) / 64};
    const int status = gemm_run(&rows, bp, m, n_out, kw, k, &out,
                                EC_PICK(path, tile_scalar, tile_avx2, tile_avx512),
                                ec_w1a1_store_for(path), ec_threads(threads));
    free(off);
    free(fix_memory);
    free(padded);
    return status;
}

/*
 * One binary convolution layer's call, its fixed arguments planned once (a frozen layer calls
 * it on every forward; at batch 1 converting the arguments of three ctypes calls costs as much
 * as a small layer's GEMM): the input, packed pixels or float32 (n, c, h, w) held contiguous or
 * channels-last, is packed by ec_pack_pixels, then ec_binary_conv's implicit GEMM or
 * ec_binary_gemm on ec_im2col_words' rows (with their mask when masked); a float input to a
 * 1x1 window without padding has only the pixels it reads packed, as the GEMM's rows;
 * writing float32 values (M x n_out) or their packed signs (M x ceil(n_out / 64) words):
 * the same operations, so the same bits, as those calls made one by one. Mirrored by
 * edgecompress.kernels._loader.BinaryConvArgs: keep the field order.
 */
typedef struct {
    int64_t geometry[12];  /* conv_window: n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw */
    const uint64_t *bp;    /* the weights' panels (im2col order) */
    const int64_t *tap_pop; /* their ec_conv_tap_popcounts, or NULL */
    const float *scale, *bias;
    int64_t n_out, k;
    float lo, hi;
    int32_t clamp, signs, implicit, masked;
    int32_t input;         /* 0: packed pixels, 1: float channels-last, 2: float contiguous */
    int32_t path, threads;
} ec_binary_conv_plan;

EC_EXPORT int ec_binary_conv_planned(const ec_binary_conv_plan *p, const void *x,
                                     const float *res, void *out) {
    conv_window g;
    memcpy(&g, p->geometry, sizeof g);
    const int64_t cw = (g.c + 63) / 64, kw = g.kh * g.kw * cw;
    const int64_t m = g.n * conv_out_h(&g) * conv_out_w(&g);
    float *cf = p->signs ? NULL : (float *)out;
    uint64_t *cs = p->signs ? (uint64_t *)out : NULL;
    uint64_t *px = (uint64_t *)x, *rows = NULL, *mask = NULL;
    int status = EC_OK;
    /* a 1x1 window without padding on a float input: only the pixels it reads are packed, and
     * they are the GEMM's rows (the same words as im2col of every packed pixel) */
    const int pointwise = p->input != 0 && g.kh == 1 && g.kw == 1 && g.ph == 0 && g.pw == 0;
    if (p->input != 0) {
        const int64_t oh = pointwise ? conv_out_h(&g) : g.h;
        const int64_t ow = pointwise ? conv_out_w(&g) : g.w;
        const int64_t sh = pointwise ? g.sh : 1, sw = pointwise ? g.sw : 1;
        px = malloc((size_t)(g.n * oh * ow * cw > 0 ? g.n * oh * ow * cw : 1) *
                    sizeof(uint64_t));
        if (px == NULL) return EC_OUT_OF_MEMORY;
        status = ec_pack_pixels((const float *)x, p->input == 1, g.n, g.c, g.h, g.w, sh, sw, oh,
                                ow, px, p->path, p->threads);
    }
    if (status == EC_OK && pointwise) {
        status = ec_binary_gemm(px, NULL, p->bp, m, p->n_out, kw, p->k, NULL, cf, cs, p->scale,
                                p->bias, res, p->clamp, p->lo, p->hi, p->path, p->threads);
    } else if (status == EC_OK && p->implicit) {
        status = ec_binary_conv(px, p->geometry, p->bp, p->n_out, NULL, cf, cs, p->scale,
                                p->bias, res, p->clamp, p->lo, p->hi, p->path, p->threads,
                                p->tap_pop);
    } else if (status == EC_OK) {
        /* a 1x1 stride-1 window without padding: the pixels are the rows */
        const int identity = !p->masked && g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1;
        const size_t words = (size_t)(m * kw > 0 ? m * kw : 1);
        rows = identity ? NULL : malloc(words * sizeof(uint64_t));
        mask = p->masked ? malloc(words * sizeof(uint64_t)) : NULL;
        if ((!identity && rows == NULL) || (p->masked && mask == NULL)) {
            status = EC_OUT_OF_MEMORY;
        } else {
            if (!identity)
                ec_im2col_words(px, g.n, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw,
                                g.dh, g.dw, rows, mask);
            status = ec_binary_gemm(identity ? px : rows, mask, p->bp, m, p->n_out, kw, p->k,
                                    NULL, cf, cs, p->scale, p->bias, res, p->clamp, p->lo,
                                    p->hi, p->path, p->threads);
        }
    }
    free(rows);
    free(mask);
    if (px != (const uint64_t *)x) free(px);
    return status;
}
