"""Tokenizers for the test models built from their GGUF vocabularies with libraries that share no code
with llama.cpp: Hugging Face `tokenizers` (GPT-2 byte-level BPE, SmolLM2) and Google's `sentencepiece`
(Gemma 3). Used to check that the server's token ids are exactly the model's tokenization."""

import re

import gguf
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

CONTROL = 3  # llama.cpp / GGUF token type of control tokens
USER_DEFINED = 4
BYTE = 6


def _fields(path):
    r = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items() if k.startswith("tokenizer.ggml.")}


def smollm2(path):
    """SmolLM2's tokenizer as its tokenizer.json defines it: byte-level BPE, digits split one by one."""
    f = _fields(path)
    vocab = {t: i for i, t in enumerate(f["tokenizer.ggml.tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in f["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    specials = [t for t, ty in zip(f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]) if ty == CONTROL]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return lambda text, parse_special: _hf_encode(tok, text, parse_special)


def _hf_encode(tok, text, parse_special):
    if parse_special:
        return tok.encode(text, add_special_tokens=False).ids
    # Plain text: encode with special-token matching disabled.
    tok.encode_special_tokens = True
    try:
        return tok.encode(text, add_special_tokens=False).ids
    finally:
        tok.encode_special_tokens = False


def gemma3(path):
    """Gemma 3's SentencePiece model (BPE, byte fallback, no dummy prefix) rebuilt from the GGUF."""
    f = _fields(path)
    proto = sp_pb2.ModelProto()
    proto.trainer_spec.model_type = sp_pb2.TrainerSpec.BPE
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id = int(f["tokenizer.ggml.unknown_token_id"])
    proto.trainer_spec.bos_id = int(f["tokenizer.ggml.bos_token_id"])
    proto.trainer_spec.eos_id = int(f["tokenizer.ggml.eos_token_id"])
    proto.trainer_spec.pad_id = int(f["tokenizer.ggml.padding_token_id"])
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    kinds = {
        1: sp_pb2.ModelProto.SentencePiece.NORMAL,
        2: sp_pb2.ModelProto.SentencePiece.UNKNOWN,
        CONTROL: sp_pb2.ModelProto.SentencePiece.CONTROL,
        USER_DEFINED: sp_pb2.ModelProto.SentencePiece.USER_DEFINED,
        5: sp_pb2.ModelProto.SentencePiece.UNUSED,
        BYTE: sp_pb2.ModelProto.SentencePiece.BYTE,
    }
    for text, score, ty in zip(
        f["tokenizer.ggml.tokens"], f["tokenizer.ggml.scores"], f["tokenizer.ggml.token_type"]
    ):
        p = proto.pieces.add()
        p.piece, p.score, p.type = text, float(score), kinds[int(ty)]
    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    # As in Gemma's tokenizer.json, user-defined pieces (runs of spaces, newlines, tabs, HTML tags) are
    # "added tokens": matched in the raw text, longest first, before the model sees it. The SentencePiece
    # library alone would escape "  " to "▁▁" first and never match them; llama.cpp follows HF here.
    pieces = f["tokenizer.ggml.tokens"]
    kinds_of = f["tokenizer.ggml.token_type"]
    user = {t: i for i, (t, ty) in enumerate(zip(pieces, kinds_of)) if ty == USER_DEFINED}
    control = {t: i for i, (t, ty) in enumerate(zip(pieces, kinds_of)) if ty == CONTROL}

    def encode(text, parse_special):
        added = dict(user, **control) if parse_special else user
        pattern = re.compile("|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)))
        out, pos = [], 0
        for m in pattern.finditer(text):
            if m.start() > pos:
                out += sp.encode(text[pos : m.start()])
            out.append(added[m.group()])
            pos = m.end()
        if pos < len(text):
            out += sp.encode(text[pos:])
        return out

    return encode
