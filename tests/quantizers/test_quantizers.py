"""Quantizers and methods against their papers' formulas (see edgecompress.quantizers.methods)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress import quantizers
from edgecompress.layers import BinaryLinear, harden
from edgecompress.quantizers import Schedule, method_pair, sign
from edgecompress.train import TrainConfig, Trainer, load_checkpoint

X = torch.tensor([-2.5, -1.0, -0.6, -0.2, 0.0, 0.3, 0.9, 1.0, 1.7], dtype=torch.float64)


def ss(x: torch.Tensor, beta: float) -> torch.Tensor:
    s = torch.sigmoid(beta * x)
    return 2 * s * (1 + beta * x * (1 - s)) - 1


def grad_of(module, x):
    x = x.clone().requires_grad_(True)
    module(x).sum().backward()
    return x.grad


# --- elementary quantizers: values and derivatives --------------------------------------------

def test_sign_and_identity_and_clip():
    assert sign(X).tolist() == [-1, -1, -1, -1, 1, 1, 1, 1, 1]
    assert torch.equal(grad_of(quantizers.get("identity"), X), torch.ones_like(X))
    clip = quantizers.get("clip")
    assert torch.equal(clip(X), X.clamp(-1, 1))
    assert grad_of(clip, X).tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_fast_sign_and_clip_chain_agree_with_the_mask_formulas_at_the_edges(dtype):
    one = torch.tensor(1.0, dtype=dtype)
    above, below = torch.nextafter(one, one * 2), torch.nextafter(one, one * 0)
    x = torch.stack([-above, -one, -below, -0.0 * one, 0.0 * one, below, one, above,
                     torch.tensor(float("inf"), dtype=dtype)])
    x = torch.cat([x, torch.randn(1000, dtype=dtype) * 1.5])
    grad = torch.randn_like(x)
    assert torch.equal(sign(x), torch.where(x >= 0, 1.0, -1.0).to(dtype))
    assert sign(x).dtype == dtype
    clip = quantizers.get("clip")
    assert torch.equal(clip.chain(x, grad), grad * (x.abs() <= 1).to(dtype))
    assert torch.equal(clip.chain(x, grad)[:8], grad[:8] * torch.tensor([0, 1, 1, 1, 1, 1, 1, 0]))


@pytest.mark.parametrize("beta", [1.0, 5.0, 10.0])
def test_signswish_value_and_derivative_formula(beta):
    q = quantizers.get("signswish", beta=beta).double()
    torch.testing.assert_close(q(X), ss(X, beta))
    expected = beta * (2 - beta * X * torch.tanh(beta * X / 2)) / (1 + torch.cosh(beta * X))
    torch.testing.assert_close(grad_of(q, X), expected)
    # the closed-form derivative is the true derivative of the value (autograd through ss)
    x = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    ss(x, beta).sum().backward()
    torch.testing.assert_close(q.derivative(x.detach()), x.grad)
    assert torch.autograd.gradcheck(lambda v: q(v), (x.detach().clone().requires_grad_(True),))


def test_signswish_tends_to_sign():
    q = quantizers.get("signswish", beta=200.0).double()
    away = X[X.abs() > 0.1]
    torch.testing.assert_close(q(away), sign(away), atol=1e-6, rtol=0)


def test_approxsign():
    q = quantizers.get("approxsign").double()
    expected = torch.where(X.abs() <= 1, 2 * X - X * X.abs(), torch.sign(X))
    torch.testing.assert_close(q(X), expected)
    expected_grad = torch.where(X.abs() <= 1, 2 - 2 * X.abs(), torch.zeros_like(X))
    torch.testing.assert_close(grad_of(q, X), expected_grad)
    inner = torch.linspace(-0.95, 0.95, 20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: q(v), (inner,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_approxsign_and_clip_equal_their_masked_formulas_bit_for_bit(dtype):
    """The arithmetic forms (clamps instead of torch.where) give the same floats, also at the
    kinks (+-1, +-0) and just beside them."""
    one = torch.tensor(1.0, dtype=dtype)
    edges = torch.stack([one, -one, torch.nextafter(one, 2 * one), torch.nextafter(one, 0 * one),
                         -torch.nextafter(one, 2 * one), -torch.nextafter(one, 0 * one)])
    x = torch.cat([torch.randn(2000, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 2,
                   edges, torch.tensor([0.0, -0.0, 5.0, -5.0], dtype=dtype)])
    approx, clip = quantizers.get("approxsign").to(dtype), quantizers.get("clip").to(dtype)
    assert torch.equal(approx.value(x), torch.where(x.abs() <= 1, 2 * x - x * x.abs(), sign(x)))
    assert torch.equal(approx.derivative(x),
                       torch.where(x.abs() <= 1, 2 - 2 * x.abs(), torch.zeros_like(x)))
    assert torch.equal(clip.derivative(x), torch.where(x.abs() <= 1, 1.0, 0.0).to(dtype))


# --- proximal quantizers ----------------------------------------------------------------------

@pytest.mark.parametrize("lam", [0.0, 0.5, 3.0])
def test_binaryrelax_prox(lam):
    q = quantizers.get("binaryrelax", lam=lam).double()
    torch.testing.assert_close(q(X), (X + lam * sign(X)) / (1 + lam))
    torch.testing.assert_close(grad_of(q, X), torch.full_like(X, 1 / (1 + lam)))


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_proxquant_prox(lam):
    q = quantizers.get("proxquant", lam=lam).double()
    s = sign(X)
    expected = s + torch.sign(X - s) * torch.clamp((X - s).abs() - lam, min=0)
    torch.testing.assert_close(q(X), expected)
    # explicit values: lam = 0 is the identity; large lam reaches sign
    if lam == 0.0:
        torch.testing.assert_close(q(X), X)
    if lam == 1.0:
        assert q(torch.tensor([0.3, -0.6, 1.7], dtype=torch.float64)).tolist() == [1, -1, 1]


@pytest.mark.parametrize("mu", [0.0, 0.4, 1.0])
def test_proxconnect_prox(mu):
    q = quantizers.get("proxconnect", mu=mu).double()
    torch.testing.assert_close(q(X), (X + mu * sign(X)).clamp(-1, 1))
    if mu == 0.0:
        torch.testing.assert_close(q(X), X.clamp(-1, 1))
    if mu == 1.0:
        torch.testing.assert_close(q(X), sign(X))


# --- method pairs: forward F = P o B, backward B' ---------------------------------------------

BACKWARD_DERIVATIVE = {
    "bc": lambda x: torch.ones_like(x),
    "bnn": lambda x: (x.abs() <= 1).double(),
    "bnn+": lambda x: 5 * (2 - 5 * x * torch.tanh(5 * x / 2)) / (1 + torch.cosh(5 * x)),
    "binaryrelax": lambda x: torch.ones_like(x),
    "proxquant": lambda x: torch.ones_like(x),
    "pc": lambda x: torch.ones_like(x),
    "bnn++": lambda x: 5 * (2 - 5 * x * torch.tanh(5 * x / 2)) / (1 + torch.cosh(5 * x)),
}


def forward_formula(method: str, x: torch.Tensor, p: float) -> torch.Tensor:
    """F of each method written out from the spec's table (p = the current lam or mu)."""
    s = sign(x)
    return {
        "bc": s, "bnn": s, "bnn+": s,
        "binaryrelax": (x + p * s) / (1 + p),
        "proxquant": s + torch.sign(x - s) * torch.clamp((x - s).abs() - p, min=0),
        "pc": (x + p * s).clamp(-1, 1),
        "bnn++": (ss(x, 5.0) + p * sign(ss(x, 5.0))).clamp(-1, 1),
    }[method]


@pytest.mark.parametrize("method", list(BACKWARD_DERIVATIVE))
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_method_forward_and_backward_match_the_spec(method, p):
    params = {"bnn+": {}, "bc": {}, "bnn": {}}.get(method)
    if params is None:
        name = {"binaryrelax": "lam", "proxquant": "lam"}.get(method, "mu")
        params = {name: p}
    q = method_pair(method, **params).double()
    torch.testing.assert_close(q(X), forward_formula(method, X, p))
    upstream = torch.linspace(0.5, 2.0, len(X), dtype=torch.float64)
    x = X.clone().requires_grad_(True)
    q(x).backward(upstream)
    torch.testing.assert_close(x.grad, upstream * BACKWARD_DERIVATIVE[method](X))


@pytest.mark.parametrize("method", list(BACKWARD_DERIVATIVE))
def test_every_method_is_prox_after_backward(method):
    """F = P o B holds: the pair's forward equals its prox applied to its backward map."""
    q = method_pair(method).double()
    x = torch.randn(200, dtype=torch.float64) * 2
    torch.testing.assert_close(q(x), q.prox.value(q.backward.value(x)))
    assert torch.equal(q.hard(x), sign(x))


def test_sign_forward_methods_equal_sign_and_end_of_schedule_is_sign():
    x = torch.randn(500, dtype=torch.float64)
    for method in ("bc", "bnn", "bnn+"):
        assert torch.equal(method_pair(method).double()(x), sign(x))
    for method, name in (("pc", "mu"), ("bnn++", "mu")):
        assert torch.equal(method_pair(method, **{name: 1.0}).double()(x), sign(x))
    pq = method_pair("proxquant", lam=float((x - sign(x)).abs().max()) + 1e-6).double()
    assert torch.equal(pq(x), sign(x))


def test_pair_repr_and_registry():
    assert "SignSwish(beta=5" in repr(method_pair("bnn++"))
    assert "mu_schedule=Schedule(kind='linear', start=0.0, end=1.0" in repr(method_pair("pc"))
    assert set(quantizers.available()) == {"sign", "identity", "clip", "signswish", "approxsign",
                                           "binaryrelax", "proxquant", "proxconnect",
                                           "uniform-weight", "uniform-activation"}
    with pytest.raises(ValueError, match="has no parameter"):
        method_pair("bnn", beta=3)
    with pytest.raises(ValueError, match="beta > 0"):
        quantizers.get("signswish", beta=0)


def test_the_registry_module_is_what_the_package_exports():
    from edgecompress.quantizers import registry

    for name in ("get", "available", "register", "pair"):
        assert getattr(quantizers, name) is getattr(registry, name)
    assert quantizers.METHODS == ("bc", "bnn", "bnn+", "binaryrelax", "proxquant", "pc", "bnn++")


def test_custom_pair_by_composition():
    q = quantizers.pair("proxconnect", "approxsign").double()
    x = torch.linspace(-1.5, 1.5, 13, dtype=torch.float64, requires_grad=True)
    y = q(x)
    a = quantizers.get("approxsign").double()
    torch.testing.assert_close(y, a.value(x.detach()).clamp(-1, 1))
    y.sum().backward()
    torch.testing.assert_close(x.grad, a.derivative(x.detach()))


# --- schedules --------------------------------------------------------------------------------

def test_schedule_values():
    assert [Schedule("linear", 0, 1).value(i, 5) for i in range(5)] == [0, 0.25, 0.5, 0.75, 1]
    geo = Schedule("geometric", 1.0, 1000.0)
    assert [round(geo.value(i, 4), 9) for i in range(4)] == [1.0, 10.0, 100.0, 1000.0]
    assert Schedule("exponential", 2.0, rate=1.5).value(3, 10) == 2.0 * 1.5 ** 3
    assert Schedule.from_value(3.0) == Schedule("constant", 3.0)
    with pytest.raises(ValueError, match="needs an end"):
        Schedule("linear", 0)
    with pytest.raises(ValueError, match="unknown schedule key"):
        Schedule.from_value({"kind": "linear", "start": 0, "stop": 1})


def test_a_one_epoch_run_is_at_the_end_of_its_schedule():
    """Each method reaches sign at the last epoch "whatever the run length": with one epoch,
    the first epoch is the last."""
    assert Schedule("linear", 0, 1).value(0, 1) == 1
    assert Schedule("geometric", 1.0, 1000.0).value(0, 1) == 1000.0
    assert method_pair("pc").prox.mu.item() == 0.0  # before the trainer steps it: the start


def test_a_ramp_reaches_the_end_value_early_and_holds_it():
    """t = min(1, i / L) with L = ramp - 1, or ramp_fraction (total - 1)."""
    total = 9
    linear = Schedule("linear", 0.0, 1.0, ramp=3)
    assert [linear.value(i, total) for i in range(total)] == [0, 0.5] + [1.0] * 7
    half = Schedule("linear", 0.0, 1.0, ramp_fraction=0.5)  # L = 4
    assert [half.value(i, total) for i in range(total)] == [0, 0.25, 0.5, 0.75] + [1.0] * 5
    geo = Schedule("geometric", 1.0, 100.0, ramp=3)
    assert [round(geo.value(i, total), 9) for i in range(4)] == [1.0, 10.0, 100.0, 100.0]
    exp = Schedule("exponential", 2.0, rate=0.5, ramp_fraction=0.25)  # L = 2
    assert [exp.value(i, total) for i in range(4)] == [2.0, 1.0, 0.5, 0.5]
    assert Schedule("linear", 0.0, 1.0, ramp=1).value(0, total) == 1.0  # at the end at once
    plain = Schedule("linear", 0.0, 1.0)
    for same in (Schedule("linear", 0.0, 1.0, ramp=total),
                 Schedule("linear", 0.0, 1.0, ramp_fraction=1.0)):
        assert [same.value(i, total) for i in range(total)] == \
            [plain.value(i, total) for i in range(total)]


def test_a_ramp_is_kept_in_the_schedule_mapping():
    spec = {"kind": "linear", "start": 0.0, "end": 1.0, "per": "step", "ramp": 4}
    assert Schedule.from_value(spec).to_dict() == spec
    assert Schedule.from_value(spec) == Schedule("linear", 0.0, 1.0, per="step", ramp=4)


@pytest.mark.parametrize("fields, message", [
    ({"ramp": 0}, r"ramp must be a positive integer \(the epochs.*got 0"),
    ({"ramp": 2.5}, r"ramp must be a positive integer.*got 2.5"),
    ({"ramp": True}, r"ramp must be a positive integer.*got True"),
    ({"ramp_fraction": 0}, r"ramp_fraction must be a number in \(0, 1\].*got 0"),
    ({"ramp_fraction": 1.5}, r"ramp_fraction must be a number in \(0, 1\].*got 1.5"),
    ({"ramp": 2, "ramp_fraction": 0.5}, r"ramp \(epochs\) or ramp_fraction .*not both"),
    ({"kind": "constant", "ramp": 2}, r"a constant schedule has no ramp"),
])
def test_bad_ramps_are_schedule_errors_naming_the_field(fields, message):
    from edgecompress.errors import EdgecompressError, ScheduleError

    spec = {"kind": "linear", "start": 0.0, "end": 1.0, **fields}
    with pytest.raises(ScheduleError, match=message) as info:
        Schedule.from_value(spec)
    assert isinstance(info.value, (EdgecompressError, ValueError))


def test_a_ramp_longer_than_the_run_is_an_error_not_a_clamp():
    from edgecompress.errors import ScheduleError

    schedule = Schedule("linear", 0.0, 1.0, ramp=5)
    schedule.check_run(5, "mu")  # as long as the run: fine
    with pytest.raises(ScheduleError, match=r"mu: ramp=5 epochs is longer than the run "
                                            r"\(4 epochs\); give ramp <= 4"):
        schedule.check_run(4, "mu")
    Schedule("linear", 0.0, 1.0, ramp_fraction=0.5).check_run(1)  # a fraction always fits


# --- the spec's "our reading" choices are options -----------------------------------------------

def test_method_prox_and_backward_can_be_replaced_by_name():
    x = torch.linspace(-2, 2, 41, requires_grad=True)
    q = method_pair("bnn++", prox="proxquant", lam=0.25)
    assert isinstance(q.prox, quantizers.ProxQuantProx) and q.prox.lam.item() == 0.25
    assert isinstance(q.backward, quantizers.SignSwish)
    q(x).sum().backward()
    torch.testing.assert_close(q(x).detach(), q.prox.value(q.backward.value(x.detach())))
    torch.testing.assert_close(x.grad, q.backward.derivative(x.detach()))
    # a replacement gets the default schedule its own method uses
    relaxed = method_pair("bnn++", prox="binaryrelax")
    assert relaxed.prox.schedules["lam"] == quantizers.method_parameters("binaryrelax")["lam"]
    assert "mu" not in relaxed.prox.params
    approx = method_pair("bnn", backward="approxsign")
    assert isinstance(approx.backward, quantizers.ApproxSign)
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['mu'\]; it has \['beta', 'lam'\]"):
        method_pair("bnn++", prox="proxquant", mu=0.5)


def test_convert_takes_prox_and_backward_options():
    from edgecompress import convert
    from edgecompress.errors import ConversionError

    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    out = convert(net, "pc", prox="binaryrelax", backward="clip")
    pair = out[1].weight_quantizer
    assert isinstance(pair.prox, quantizers.BinaryRelaxProx)
    assert isinstance(pair.backward, quantizers.Clip)
    with pytest.raises(ConversionError, match="unknown quantizer 'nope'; available: approxsign"):
        convert(net, "pc", prox="nope")


# --- derivatives of the proximal maps (given for completeness; pairs use B' only) ---------------

def test_proxquant_and_proxconnect_derivatives():
    x = torch.tensor([-2.0, -1.2, -1.0, -0.7, -0.1, 0.0, 0.3, 0.9, 1.0, 1.4])
    pq = quantizers.ProxQuantProx(0.25)  # 1{|x - sign(x)| > lam}
    assert pq.derivative(x).tolist() == [1, 0, 0, 1, 1, 1, 1, 0, 0, 1]
    pc = quantizers.ProxConnectProx(0.5)  # 1{|x + mu sign(x)| <= 1}
    assert pc.derivative(x).tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    br = quantizers.BinaryRelaxProx(3.0)  # 1 / (1 + lam)
    assert br.derivative(x).tolist() == [0.25] * 10


class Blobs(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(64) % 2
        self.x = torch.randn(64, 6, generator=g) + self.y[:, None].float()

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def binary_net(method: str, **params) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(),
                         BinaryLinear(8, 8, weight_quantizer=method_pair(method, **params)),
                         nn.Tanh(), nn.Linear(8, 2))


def test_trainer_steps_schedules_logs_them_and_resumes(tmp_path):
    config = dict(epochs=5, batch_size=16, lr=0.05, progress=False)
    ref = Trainer(binary_net("pc"), Blobs(), None, TrainConfig(**config))
    ref.fit()
    assert [h["mu"] for h in ref.history] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert ref.model[2].weight_quantizer.prox.mu.item() == 1.0

    class Stop(Exception):
        pass

    from edgecompress.train import Callback

    class StopAt(Callback):
        def on_epoch_start(self, trainer, epoch):
            if epoch == 3:
                raise Stop

    run = TrainConfig(**config, out_dir=str(tmp_path))
    with pytest.raises(Stop):
        Trainer(binary_net("pc"), Blobs(), None, run, callbacks=[StopAt()]).fit()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["model"]["2.weight_quantizer.prox.mu"].item() == 0.5
    assert {"values": {"2.weight_quantizer.prox.mu": 0.5}} in state["callbacks"]
    resumed = Trainer(binary_net("pc"), Blobs(), None,
                      TrainConfig(**config, out_dir=str(tmp_path), resume=True),
                      callbacks=[Callback()])
    resumed.fit()
    assert [h["mu"] for h in resumed.history] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for a, b in zip(ref.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_step_schedule_advances_every_step():
    net = binary_net("bnn++", mu={"kind": "linear", "start": 0, "end": 1, "per": "step"})
    trainer = Trainer(net, Blobs(), None, TrainConfig(epochs=2, batch_size=16, progress=False))
    trainer.fit()
    assert trainer.total_steps == 8
    assert net[2].weight_quantizer.prox.mu.item() == pytest.approx(1.0)


def test_harden_makes_the_forward_exactly_sign():
    net = binary_net("binaryrelax", lam=2.0).eval()
    x = torch.randn(5, 6)
    layer = net[2]
    before = layer.quantized_weight()
    assert not torch.equal(before, sign(layer.weight))
    harden(net)
    assert torch.equal(layer.quantized_weight(), sign(layer.weight))
    assert torch.equal(layer.hard_weight(), sign(layer.weight))
    net(x)


@pytest.mark.slow
def test_scheduled_layer_compiles_without_recompiling_on_new_values():
    net = binary_net("pc").eval()
    x = torch.randn(4, 6)
    compiled = torch.compile(net)
    for mu in (0.0, 0.5, 1.0):
        net[2].weight_quantizer.prox.set_param("mu", mu)
        torch.testing.assert_close(compiled(x), net(x))


@pytest.mark.slow
def test_signswish_methods_train_under_torch_compile():
    """torch.compile traces the PyTorch formulas (not the eager C kernel): same loss and
    gradients as eager."""
    torch.manual_seed(0)
    net = binary_net("bnn++")
    net[2].weight_quantizer.prox.set_param("mu", 0.3)
    x = torch.randn(8, 6)
    eager_loss = net(x).square().sum()
    eager_grads = torch.autograd.grad(eager_loss, list(net.parameters()))
    compiled_loss = torch.compile(net)(x).square().sum()
    compiled_grads = torch.autograd.grad(compiled_loss, list(net.parameters()))
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-5)
    for got, want in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_recipe_can_replace_the_prox(tmp_path):
    from edgecompress.recipe import Recipe

    path = tmp_path / "r.yaml"
    path.write_text("name: r\nmodel: {name: mlp, hidden: [16, 16], activation: hardtanh}\ndata: {name: mnist}\n"
                    "method: {name: bnn++, mode: w1a1, prox: proxquant, lam: 0.1}\n")
    model, report = Recipe.from_yaml(path).build_model(10, (1, 28, 28))
    layer = model.get_submodule(report.converted[0][0])
    assert isinstance(layer.weight_quantizer.prox, quantizers.ProxQuantProx)
    assert layer.weight_quantizer.prox.lam.item() == pytest.approx(0.1)
