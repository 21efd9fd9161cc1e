import os

# Tests never touch the network: no hub downloads, no telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised tiny MedGPT-OSS saved with its tokenizer (folder name ``model``, as a stage
    saves it), shared by the eval tests."""
    import torch

    from medkit.chat import load_tokenizer
    from medkit.model.build import build_tiny_model
    from medkit.profiles import load_profile

    path = tmp_path_factory.mktemp("tiny_checkpoint") / "model"
    torch.manual_seed(0)
    tokenizer = load_tokenizer("tiny")
    build_tiny_model(load_profile("tiny"), tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
