"""A tokenizer read straight from ``tokenizer.json`` with the ``tokenizers`` library: no torch,
no transformers import (which takes seconds), for commands that only tokenize (``validate``).

Used only where it gives the ids and offsets transformers' tokenizer gives: a folder whose
``tokenizer_config.json`` names the plain fast tokenizer class (``TokenizersBackend`` or
``PreTrainedTokenizerFast``), no remote code, no setting transformers would apply on top of
``tokenizer.json`` (``add_bos_token``, ``add_prefix_space``, ``legacy``, ...), special tokens
that are already added tokens of the file, and no truncation or padding in it. Anything else
loads ``AutoTokenizer`` as before. What the adapter does not implement (``apply_chat_template``,
``decode``, ...) is answered by the transformers tokenizer, loaded on first use.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLAIN_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast"}
SPECIAL = ("bos_token", "eos_token", "pad_token", "unk_token")
# tokenizer_config.json keys that change nothing transformers does on top of tokenizer.json
HARMLESS_KEYS = {*SPECIAL, "backend", "tokenizer_class", "model_max_length", "is_local", "local_files_only",
                 "clean_up_tokenization_spaces", "chat_template", "added_tokens_decoder", "padding_side",
                 "truncation_side", "model_input_names", "name_or_path"}


def _content(value: Any) -> str | None:
    if isinstance(value, dict):  # {"content": "<s>", "__type": "AddedToken", ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


def plain_config(folder: Path) -> dict[str, Any] | None:
    """The tokenizer config of ``folder`` when the adapter reproduces its tokenizer, else None."""
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not isinstance(spec, dict):
        return None
    if config.get("tokenizer_class") not in PLAIN_CLASSES or set(config) - HARMLESS_KEYS:
        return None
    if spec.get("truncation") is not None or spec.get("padding") is not None:
        return None
    added = {t.get("content"): t for t in spec.get("added_tokens", []) if isinstance(t, dict)}
    for name in SPECIAL:
        token = _content(config.get(name))
        if config.get(name) is not None and (token is None or not added.get(token, {}).get("special")):
            return None
    for entry in (config.get("added_tokens_decoder") or {}).values():  # each one must be in the file as is
        token = added.get(_content(entry))
        if token is None or any(token.get(k) != entry.get(k) for k in ("special", "lstrip", "rstrip", "normalized")
                                if k in entry):
            return None
    return config


class LightTokenizer:
    """What sftkit's encoder and validators call on a tokenizer, on a ``tokenizers.Tokenizer``."""

    def __init__(self, folder: Path, config: dict[str, Any], trust_remote_code: bool = False):
        from tokenizers import Tokenizer

        self.folder, self.trust_remote_code = folder, trust_remote_code
        self.backend_tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._full_tokenizer = None
        self._added: list[str] = []
        for name in SPECIAL:
            setattr(self, name, _content(config.get(name)))
        if self.pad_token is None and self.eos_token is not None:  # as sftkit.models.load_tokenizer does
            self.pad_token = self.eos_token

    # -- special tokens --------------------------------------------------------------------------

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.backend_tokenizer.token_to_id(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id(self.pad_token)

    @property
    def unk_token_id(self) -> int | None:
        return self._id(self.unk_token)

    # -- encoding --------------------------------------------------------------------------------

    def __call__(self, text: str | list[str], add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False, **options: Any) -> dict[str, Any]:
        """``{"input_ids", "attention_mask"[, "offset_mapping"]}`` for a text or a list of texts,
        as transformers' tokenizer returns them (other options: the transformers tokenizer)."""
        if options:
            return self.full()(text, add_special_tokens=add_special_tokens,
                               return_offsets_mapping=return_offsets_mapping, **options)
        single = isinstance(text, str)
        encoded = self.backend_tokenizer.encode_batch([text] if single else list(text),
                                                      add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": [e.ids for e in encoded],
                               "attention_mask": [e.attention_mask for e in encoded]}
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encoded]
        return {key: value[0] for key, value in out.items()} if single else out

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self.backend_tokenizer.id_to_token(ids)
        return [self.backend_tokenizer.id_to_token(int(i)) for i in ids]

    def get_vocab(self) -> dict[str, int]:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def add_tokens(self, tokens: list[str], special_tokens: bool = False) -> int:
        """Add tokens as transformers does for special ones (not normalized, no stripping)."""
        from tokenizers import AddedToken

        if not special_tokens:
            return self.full().add_tokens(tokens)
        added = self.backend_tokenizer.add_special_tokens(
            [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
             for t in tokens])
        self._added.extend(tokens)
        if self._full_tokenizer is not None:
            self._full_tokenizer.add_tokens(tokens, special_tokens=True)
        return added

    # -- everything else -------------------------------------------------------------------------

    def full(self) -> Any:
        """The transformers tokenizer of the same folder (loaded once, with the tokens added here)."""
        if self._full_tokenizer is None:
            from transformers import AutoTokenizer

            full = AutoTokenizer.from_pretrained(str(self.folder), trust_remote_code=self.trust_remote_code)
            if full.pad_token is None and full.eos_token is not None:
                full.pad_token = full.eos_token
            if self._added:
                full.add_tokens(self._added, special_tokens=True)
            self._full_tokenizer = full
        return self._full_tokenizer

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.full(), name)


def load(path: str, trust_remote_code: bool = False) -> LightTokenizer | None:
    """The light tokenizer of a local folder, or None where transformers' is needed."""
    folder = Path(path)
    if trust_remote_code or not folder.is_dir():
        return None
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return None
    config = plain_config(folder)
    return None if config is None else LightTokenizer(folder, config, trust_remote_code)
