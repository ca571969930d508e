"""An independent float64 forward pass of a llama-architecture GGUF (SmolLM2) in numpy.

It shares nothing with llama.cpp but the file: the `gguf` package reads and dequantizes the tensors, and
the transformer (RMSNorm, rotary embeddings in llama.cpp's "normal" pair layout, grouped-query causal
attention, SwiGLU, tied output) is written out here in float64. Its log-probabilities are the reference
the server's numbers are checked against.
"""

import gguf
import numpy as np


class LlamaReference:
    def __init__(self, path):
        reader = gguf.GGUFReader(path)
        f = reader.fields

        def scalar(key):
            return f[key].contents()

        arch = scalar("general.architecture")
        if arch != "llama":
            raise ValueError(f"reference supports the llama architecture, not {arch}")
        self.n_layer = int(scalar("llama.block_count"))
        self.n_head = int(scalar("llama.attention.head_count"))
        self.n_head_kv = int(scalar("llama.attention.head_count_kv"))
        self.eps = float(scalar("llama.attention.layer_norm_rms_epsilon"))
        self.rope_base = float(scalar("llama.rope.freq_base"))
        self.w = {}
        for t in reader.tensors:
            self.w[t.name] = np.asarray(
                gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float64
            )
        self.d_model = self.w["token_embd.weight"].shape[1]
        self.head_dim = self.d_model // self.n_head
        self.out = self.w.get("output.weight", self.w["token_embd.weight"])

    def _rms(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def _rope(self, x, positions):
        # llama.cpp's NORM rope: rotate adjacent pairs (x[2i], x[2i+1]) by pos * base^(-2i/d).
        d = x.shape[-1]
        inv = self.rope_base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        ang = positions[:, None] * inv[None, :]  # (T, d/2)
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def logits(self, tokens):
        """Logits (T, vocab) in float64 for every position of `tokens`."""
        T = len(tokens)
        pos = np.arange(T, dtype=np.float64)
        x = self.w["token_embd.weight"][np.asarray(tokens)]
        mask = np.triu(np.full((T, T), -np.inf), k=1)
        group = self.n_head // self.n_head_kv
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self._rms(x, self.w[p + "attn_norm.weight"])
            q = (h @ self.w[p + "attn_q.weight"].T).reshape(T, self.n_head, self.head_dim)
            k = (h @ self.w[p + "attn_k.weight"].T).reshape(T, self.n_head_kv, self.head_dim)
            v = (h @ self.w[p + "attn_v.weight"].T).reshape(T, self.n_head_kv, self.head_dim)
            q, k = self._rope(q, pos), self._rope(k, pos)
            k = np.repeat(k, group, axis=1)
            v = np.repeat(v, group, axis=1)
            att = np.einsum("thd,shd->hts", q, k) / np.sqrt(self.head_dim) + mask
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            o = np.einsum("hts,shd->thd", att, v).reshape(T, self.d_model)
            x = x + o @ self.w[p + "attn_output.weight"].T
            h = self._rms(x, self.w[p + "ffn_norm.weight"])
            g = h @ self.w[p + "ffn_gate.weight"].T
            u = h @ self.w[p + "ffn_up.weight"].T
            x = x + ((g / (1.0 + np.exp(-g))) * u) @ self.w[p + "ffn_down.weight"].T
        x = self._rms(x, self.w["output_norm.weight"])
        return x @ self.out.T

    def token_logprobs(self, tokens, start):
        """log p(tokens[i] | tokens[:i]) for i in [start, len(tokens)), in float64."""
        z = self.logits(tokens)
        m = z.max(axis=-1, keepdims=True)
        lsm = z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))
        return [float(lsm[i - 1, tokens[i]]) for i in range(start, len(tokens))]
