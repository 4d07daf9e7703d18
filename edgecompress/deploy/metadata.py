"""The optional metadata section of a frozen model file: what a user of the file needs besides
the model itself, i.e. how to turn input files into model inputs and how to name its outputs.

``deploy.save(model, path, metadata=ModelMetadata(...))`` writes it (as JSON in the file's
header, key ``"metadata"``, with its own ``version``); :func:`~edgecompress.deploy.load_metadata`
reads it back, validated, without loading the tensors. Files written without it (also every
file of before this section existed) load as before; a command that needs it says so.

Fields:

- ``dataset``: the dataset name the model was trained on (``edgecompress.data.load``);
- ``task``: the training task (``classification``, ``language-modelling``);
- ``input_shape`` / ``input_dtype``: one input without batch dimension, e.g. (1, 28, 28)
  ``float32``;
- ``classes``: the name of each output (None when the dataset names none);
- ``preprocessing``: how one raw sample becomes an input, exactly as in training
  (:mod:`edgecompress.data.preprocess`; None for inputs without one, e.g. tokens);
- ``recipe``: the training recipe (``eval`` of the file reloads its dataset with it);
- ``training``: where and how far it was trained (``checkpoint``, ``epoch``, final ``metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..data.preprocess import Preprocessing, preprocessing_from_dict
from ..errors import DataError, ModelFileError

VERSION = 1
_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8")


@dataclass
class ModelMetadata:
    """A frozen file's metadata section (see the module docstring)."""

    dataset: str
    input_shape: tuple[int, ...]
    input_dtype: str = "float32"
    classes: list[str] | None = None
    preprocessing: Preprocessing | None = None
    task: str = "classification"
    recipe: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_shape = tuple(self.input_shape)
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset must be a name, got {self.dataset!r}")
        if not self.input_shape or not all(isinstance(d, int) and not isinstance(d, bool)
                                           and d > 0 for d in self.input_shape):
            raise ValueError(f"input_shape must be positive ints, got {self.input_shape!r}")
        if self.input_dtype not in _DTYPES:
            raise ValueError(f"input_dtype must be one of {', '.join(_DTYPES)}, got "
                             f"{self.input_dtype!r}")
        if self.classes is not None and not (
                isinstance(self.classes, list) and all(isinstance(c, str) for c in self.classes)):
            raise ValueError(f"classes must be a list of names, got {self.classes!r:.80}")
        if self.preprocessing is not None and not isinstance(self.preprocessing, Preprocessing):
            raise ValueError(f"preprocessing must be a Preprocessing, got "
                             f"{type(self.preprocessing).__name__}")
        for name in ("recipe", "training"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{name} must be a mapping, got {value!r:.80}")

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "dataset": self.dataset, "task": self.task,
                "input_shape": list(self.input_shape), "input_dtype": self.input_dtype,
                "classes": self.classes,
                "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
                "recipe": self.recipe, "training": self.training}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ModelMetadata":
        """The metadata :meth:`to_dict` wrote; anything malformed or of a newer version raises
        ModelFileError saying what."""
        if not isinstance(raw, Mapping):
            raise ModelFileError(f"metadata must be a mapping, got {type(raw).__name__}")
        version = raw.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ModelFileError(f"metadata has no valid version (got {version!r})")
        if version > VERSION:
            raise ModelFileError(f"metadata version {version} is newer than this edgecompress "
                                 f"reads ({VERSION}); upgrade edgecompress")
        known = {"version", "dataset", "task", "input_shape", "input_dtype", "classes",
                 "preprocessing", "recipe", "training"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ModelFileError(f"metadata has unknown key(s) {unknown}; known: {sorted(known)}")
        missing = [k for k in ("dataset", "input_shape") if k not in raw]
        if missing:
            raise ModelFileError(f"metadata lacks {', '.join(missing)}")
        values = {k: v for k, v in raw.items() if k != "version"}
        try:
            if values.get("preprocessing") is not None:
                values["preprocessing"] = preprocessing_from_dict(values["preprocessing"])
            if values.get("training") is None:
                values["training"] = {}
            return cls(**values)
        except (DataError, ValueError, TypeError) as exc:
            raise ModelFileError(f"metadata: {exc}") from None
