"""Suite-wide test settings: offline, deterministic, small thread pools (CI has 2 cores)."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def clip_tokenizer_dir(tmp_path_factory):
    """A folder with the real CLIP tokenizer files (built offline from open_clip's vocabulary)."""
    from mmalign.clip_tokenizer import write_clip_tokenizer_files

    return write_clip_tokenizer_files(tmp_path_factory.mktemp("clip_tokenizer"))


TESTS = Path(__file__).resolve().parent
SINGLE_THREAD_AREAS = {"diffusion", "diffusion/inversion", "diffusion/ppd", "objectives", "recipes", "toy/main_job",
                       "mllm/vlm"}
"""Test folders (under ``tests/``) whose tiny models run fastest single-threaded (thread hand-offs dominate on the
shared 2-core CI machine; ``recipes``: the shipped-config matrix, every recipe on tiny models); the other folders
keep the suite-wide two threads. Paths, not folder names: the names
``diffusion_inversion`` / ``diffusion_ppd`` / ``toy_main_job`` of the flat layout matched nothing once the tests
mirrored the package tree (``tests/diffusion/inversion``, ...)."""


def _area(path: Path) -> str:
    try:
        return path.resolve().parent.relative_to(TESTS).as_posix()
    except ValueError:
        return ""


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request):
    if _area(Path(request.path)) not in SINGLE_THREAD_AREAS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
