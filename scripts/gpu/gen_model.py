"""Write a llama-architecture GGUF with random Q4_K weights at a given shape (default: Llama-3-8B).

Speed of llama.cpp kernels does not depend on weight values, so this stands in for a real 8B Q4_K_M file
where no model can be downloaded. The tokenizer is a byte-level GPT-2 BPE vocabulary padded to n_vocab.
"""
import sys
import types
import numpy as np
try:
    import yaml  # noqa: F401
except ImportError:  # gguf imports PyYAML only to read model cards; a GPU host may lack it
    sys.modules["yaml"] = types.ModuleType("yaml")
import gguf
from gguf import GGMLQuantizationType as Q

def main(path, n_layer=32, n_embd=4096, n_ff=14336, n_head=32, n_head_kv=8, n_vocab=128256):
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(8192); w.add_embedding_length(n_embd); w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff); w.add_head_count(n_head); w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(500000.0); w.add_layer_norm_rms_eps(1e-5); w.add_rope_dimension_count(n_embd // n_head)
    w.add_vocab_size(n_vocab); w.add_file_type(15)
    bs = [chr(c) for c in range(ord("!"), ord("~") + 1)] + [chr(c) for c in range(ord("¡"), ord("¬") + 1)] + [chr(c) for c in range(ord("®"), ord("ÿ") + 1)]
    n = 0; byte_tokens = list(bs)
    for b in range(256):
        if chr(b) not in bs: byte_tokens.append(chr(256 + n)); n += 1
    toks = byte_tokens + [f"<t{i}>" for i in range(n_vocab - 256)]
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("default")
    w.add_token_list(toks); w.add_token_types([1] * n_vocab); w.add_token_merges(["Ġ t"])
    w.add_bos_token_id(n_vocab - 2); w.add_eos_token_id(n_vocab - 1); w.add_add_bos_token(False)
    rng = np.random.default_rng(0)
    def q4k(rows, cols):  # Q4_K: 144 bytes per 256 weights; d=1e-4 (f16), dmin=0
        nb = rows * cols // 256
        b = rng.integers(0, 256, size=(nb, 144), dtype=np.uint8)
        b[:, 0:2] = np.frombuffer(np.float16(2e-5).tobytes(), dtype=np.uint8)
        b[:, 2:4] = 0
        return b.reshape(rows, cols // 256 * 144)
    def add(name, rows, cols):
        w.add_tensor(name, q4k(rows, cols), raw_dtype=Q.Q4_K)
    add("token_embd.weight", n_vocab, n_embd)
    for l in range(n_layer):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        hd = n_embd // n_head
        add(p + "attn_q.weight", n_embd, n_embd); add(p + "attn_k.weight", n_head_kv * hd, n_embd)
        add(p + "attn_v.weight", n_head_kv * hd, n_embd); add(p + "attn_output.weight", n_embd, n_embd)
        add(p + "ffn_gate.weight", n_ff, n_embd); add(p + "ffn_up.weight", n_ff, n_embd); add(p + "ffn_down.weight", n_embd, n_ff)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    add("output.weight", n_vocab, n_embd)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

if __name__ == "__main__":
    shape = sys.argv[2] if len(sys.argv) > 2 else "8b"
    if shape == "tiny":
        main(sys.argv[1], n_layer=2, n_embd=512, n_ff=1024, n_head=8, n_head_kv=4, n_vocab=4096)
    else:
        main(sys.argv[1])
