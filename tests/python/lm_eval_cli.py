"""lm-eval's command line, as `lm_eval ...`, with the `gguf-main` model (lm-eval's rewritten `gguf` backend, see
lm_eval_gguf_main.py) registered first: `python lm_eval_cli.py --model gguf-main --model_args base_url=...`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lm_eval.models  # noqa: E402,F401  (the released backends first, then the rewritten one beside them)
import lm_eval_gguf_main  # noqa: E402,F401
from lm_eval.__main__ import cli_evaluate  # noqa: E402

if __name__ == "__main__":
    cli_evaluate()
