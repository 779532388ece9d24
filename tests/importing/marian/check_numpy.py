"""Independent NumPy re-implementation of the fixture model, written from NOTES.md.

It reads ``model/`` with nothing but numpy, json and sentencepiece (all available
in the project environment; no torch, no transformers, no safetensors package)
and checks that it reproduces ``reference.json``: tokenizer ids, logits (each
pair alone and as a padded batch) and greedy generation. It is an executable
version of NOTES.md, not a test the suite collects. Run::

    python tests/importing/marian/check_numpy.py
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import sentencepiece as spm

HERE = Path(__file__).resolve().parent
MODEL = HERE / "model"
NEG = np.float32(-1e9)


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    header.pop("__metadata__", None)
    base = 8 + header_len
    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": None}
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        raw = data[base + start : base + end]
        if info["dtype"] == "BF16":  # upper 16 bits of a float32
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtypes[info["dtype"]]).astype(np.float32)
        out[name] = arr.reshape(info["shape"])
    return out


def sinusoids(n_pos: int, dim: int) -> np.ndarray:
    """Marian: sin in channels [0, dim/2), cos in [dim/2, dim); channel pair i
    uses frequency 1 / 10000^(2i/dim)."""
    pos = np.arange(n_pos, dtype=np.float64)[:, None]
    i = np.arange(dim // 2, dtype=np.float64)[None, :]
    angle = pos / np.power(10000.0, 2 * i / dim)
    return np.concatenate([np.sin(angle), np.cos(angle)], axis=1).astype(np.float32)


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def linear(x, p, name):
    return x @ p[name + ".weight"].T + p[name + ".bias"]  # torch Linear: weight [out, in]


def attention(p, prefix, x, kv, mask, heads):
    """mask: additive, broadcastable to [batch, heads, q, k]."""
    b, tq, d = x.shape
    tk = kv.shape[1]
    hd = d // heads
    q = linear(x, p, prefix + ".q_proj").reshape(b, tq, heads, hd).transpose(0, 2, 1, 3)
    k = linear(kv, p, prefix + ".k_proj").reshape(b, tk, heads, hd).transpose(0, 2, 1, 3)
    v = linear(kv, p, prefix + ".v_proj").reshape(b, tk, heads, hd).transpose(0, 2, 1, 3)
    scores = (q @ k.transpose(0, 1, 3, 2)) * hd**-0.5 + mask
    scores = scores - scores.max(-1, keepdims=True)
    w = np.exp(scores)
    w = w / w.sum(-1, keepdims=True)
    out = (w @ v).transpose(0, 2, 1, 3).reshape(b, tq, d)
    return linear(out, p, prefix + ".out_proj")


def swish(x):
    return x / (1.0 + np.exp(-x))


def add_and_norm(p, name, x, h):
    """Marian is post-norm: the residual sum, then the layer norm ``name``."""
    return layer_norm(x + h, p[name + ".weight"], p[name + ".bias"])


def feed_forward(p, prefix, x):
    """The block's fc1 -> swish -> fc2 sublayer, with its residual and final_layer_norm."""
    h = linear(swish(linear(x, p, prefix + ".fc1")), p, prefix + ".fc2")
    return add_and_norm(p, prefix + ".final_layer_norm", x, h)


class Marian:
    def __init__(self, model_dir: Path):
        self.cfg = json.loads((model_dir / "config.json").read_text())
        self.p = load_safetensors(model_dir / "model.safetensors")
        d = self.cfg["d_model"]
        self.emb = self.p["model.shared.weight"]
        self.scale = np.float32(np.sqrt(d)) if self.cfg["scale_embedding"] else np.float32(1.0)
        self.pos = sinusoids(self.cfg["max_position_embeddings"], d)
        self.bias = self.p["final_logits_bias"].reshape(-1)

    def encode(self, ids, attn):
        c, p = self.cfg, self.p
        x = self.emb[ids] * self.scale + self.pos[: ids.shape[1]]
        mask = np.where(attn[:, None, None, :] > 0, 0.0, NEG).astype(np.float32)
        for i in range(c["encoder_layers"]):
            pre = f"model.encoder.layers.{i}"
            h = attention(p, pre + ".self_attn", x, x, mask, c["encoder_attention_heads"])
            x = add_and_norm(p, pre + ".self_attn_layer_norm", x, h)
            x = feed_forward(p, pre, x)
        return x

    def decode(self, dec_ids, enc, enc_attn):
        """Full (uncached) decoder pass; position t of dec_ids uses sinusoid row t."""
        c, p = self.cfg, self.p
        t = dec_ids.shape[1]
        x = self.emb[dec_ids] * self.scale + self.pos[:t]
        causal = np.triu(np.full((t, t), NEG, np.float32), 1)[None, None]
        cross = np.where(enc_attn[:, None, None, :] > 0, 0.0, NEG).astype(np.float32)
        for i in range(c["decoder_layers"]):
            pre = f"model.decoder.layers.{i}"
            h = attention(p, pre + ".self_attn", x, x, causal, c["decoder_attention_heads"])
            x = add_and_norm(p, pre + ".self_attn_layer_norm", x, h)
            h = attention(p, pre + ".encoder_attn", x, enc, cross, c["decoder_attention_heads"])
            x = add_and_norm(p, pre + ".encoder_attn_layer_norm", x, h)
            x = feed_forward(p, pre, x)
        return x @ self.emb.T + self.bias  # tied output projection + final_logits_bias

    def greedy(self, ids, attn, max_new_tokens, gen_cfg):
        start, eos, pad = (
            gen_cfg["decoder_start_token_id"],
            gen_cfg["eos_token_id"],
            gen_cfg["pad_token_id"],
        )
        bad = [w[0] for w in gen_cfg.get("bad_words_ids", []) if len(w) == 1]
        max_length = 1 + max_new_tokens  # the start token counts
        enc = self.encode(ids, attn)
        seq = np.full((ids.shape[0], 1), start, np.int64)
        done = np.zeros(ids.shape[0], bool)
        while seq.shape[1] < max_length and not done.all():
            scores = self.decode(seq, enc, attn)[:, -1]
            scores[:, bad] = -np.inf
            if seq.shape[1] == max_length - 1:  # forced_eos_token_id
                scores[:] = -np.inf
                scores[:, gen_cfg["forced_eos_token_id"]] = 0
            nxt = scores.argmax(-1)
            nxt = np.where(done, pad, nxt)
            seq = np.concatenate([seq, nxt[:, None]], 1)
            done |= nxt == eos
        return seq


class Tokenizer:
    def __init__(self, model_dir: Path):
        self.vocab = json.loads((model_dir / "vocab.json").read_text(encoding="utf-8"))
        self.inv = {i: t for t, i in self.vocab.items()}
        self.src = spm.SentencePieceProcessor(model_file=str(model_dir / "source.spm"))
        self.tgt = spm.SentencePieceProcessor(model_file=str(model_dir / "target.spm"))

    def encode(self, text: str, target: bool = False) -> list[int]:
        pieces = (self.tgt if target else self.src).encode(text, out_type=str)
        return [self.vocab.get(pc, self.vocab["<unk>"]) for pc in pieces] + [self.vocab["</s>"]]

    def decode(self, ids) -> str:
        special = {"</s>", "<unk>", "<pad>"}
        pieces = [self.inv[int(i)] for i in ids if self.inv[int(i)] not in special]
        return self.tgt.decode_pieces(pieces).replace("\u2581", " ").strip()


def main() -> None:
    ref = json.loads((HERE / "reference.json").read_text(encoding="utf-8"))
    gen_cfg = json.loads((MODEL / "generation_config.json").read_text())
    tok, model = Tokenizer(MODEL), Marian(MODEL)
    worst = 0.0
    for pair in ref["pairs"]:
        assert tok.encode(pair["source"]) == pair["input_ids"], pair["source"]
        assert tok.encode(pair["target"], target=True) == pair["labels"], pair["target"]
        assert pair["decoder_input_ids"] == [ref["decoder_start_token_id"]] + pair["labels"][:-1]
        ids = np.array([pair["input_ids"]])
        attn = np.ones_like(ids)
        logits = model.decode(np.array([pair["decoder_input_ids"]]), model.encode(ids, attn), attn)[
            0
        ]
        worst = max(worst, float(np.abs(logits - np.array(pair["logits"], np.float32)).max()))
    b = ref["batch"]
    attn = np.array(b["attention_mask"])
    ids = np.array(b["input_ids"])
    logits = model.decode(np.array(b["decoder_input_ids"]), model.encode(ids, attn), attn)
    worst = max(worst, float(np.abs(logits - np.array(b["logits"], np.float32)).max()))
    print(f"max |logits - reference| = {worst:.2e}")
    assert worst < 2e-5  # layer-norm eps 1e-6 instead of 1e-5 already gives ~4e-5

    g = ref["generate"]
    for src, ids in zip(g["sources"], g["input_ids"], strict=True):
        enc = tok.encode(src)
        assert ids[: len(enc)] == enc and all(i == ref["pad_token_id"] for i in ids[len(enc) :])
    seq = model.greedy(np.array(g["input_ids"]), np.array(g["attention_mask"]), 12, gen_cfg)
    assert seq.tolist() == g["sequences"], (seq.tolist(), g["sequences"])
    assert [tok.decode(s) for s in seq] == g["text"]
    print("tokenizer ids, logits, greedy sequences and decoded text match reference.json")


if __name__ == "__main__":
    main()
