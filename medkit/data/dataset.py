"""A torch Dataset of conversation samples, encoded on access by a MedGPTOssProcessor."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from torch.utils.data import Dataset

from medkit.data.schema import Sample, read_jsonl
from medkit.model.processor import EncodedSample, MedGPTOssProcessor


class ConversationDataset(Dataset):
    """(sample, image root) pairs; images are read and tiled when an item is asked for."""

    def __init__(self, items: list[tuple[Sample, Path]], processor: MedGPTOssProcessor, for_generation: bool = False):
        self.items = items
        self.processor = processor
        self.for_generation = for_generation

    @classmethod
    def from_jsonl(
        cls,
        paths: Iterable[str | Path],
        processor: MedGPTOssProcessor,
        *,
        split: str | None = None,
        limit: int | None = None,
        for_generation: bool = False,
    ) -> "ConversationDataset":
        items = []
        for path in paths:
            path = Path(path)
            samples = [s for s in read_jsonl(path) if split is None or s.meta.get("split") == split]
            items.extend((s, path.parent) for s in samples[:limit])
        return cls(items, processor, for_generation)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> EncodedSample:
        sample, root = self.items[index]
        return self.processor.encode(sample, root, for_generation=self.for_generation)
