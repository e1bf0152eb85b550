"""The one merge step: the batches' part files -> metadata.parquet (and rejected.parquet), prepare.json and the
dataset card. Parts are streamed in order, a few thousand rows at a time, so merging 100,000 slices holds as
little as merging 10; whichever process finds every part written runs it, and a rerun repeats it unchanged."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from dallebrain.data.grid import VolumeGrid
from dallebrain.data.io import atomic_path, write_json_atomic
from dallebrain.synthesize.card import AGE_BIN, LEVEL_BIN
from dallebrain.synthesize.generate import part_path
from dallebrain.synthesize.options import SynthesisOptions
from dallebrain.synthesize.table import SCHEMA

ROW_GROUP = 8192  # rows per parquet row group of the merged table


@dataclass
class Tally:
    """Counts of a merged table, for the card (streamed: never the whole table)."""

    kept: int = 0
    rejected: int = 0
    counts: dict[str, Counter] = field(default_factory=lambda: {k: Counter() for k in (
        "split", "modality", "orientation", "sex", "field_strength", "age", "judged")})
    levels: dict[str, Counter] = field(default_factory=dict)

    def add(self, table: pa.Table, kept: bool) -> None:
        verdicts = table.column("on_prompt").to_pylist()
        self.counts["judged"].update({True: "on prompt", False: "off prompt"}.get(v, "not judged") for v in verdicts)
        if not kept:
            self.rejected += table.num_rows
            return
        self.kept += table.num_rows
        frame = table.select(["split", "modality", "orientation", "sex", "field_strength", "age",
                              "slice_mm"]).to_pandas()
        for name in ("split", "modality", "orientation"):
            self.counts[name].update(frame[name])
        self.counts["sex"].update(frame["sex"].fillna("unknown"))
        self.counts["field_strength"].update(f"{v:g} T" if v == v else "unknown" for v in frame["field_strength"])
        self.counts["age"].update(int(a // AGE_BIN * AGE_BIN) if a == a else -1 for a in frame["age"])
        for orientation, level in zip(frame["orientation"], frame["slice_mm"], strict=True):
            bin_ = int(level // LEVEL_BIN * LEVEL_BIN)
            self.levels.setdefault(orientation, Counter())[bin_] += 1


class _StreamingParquet:
    """A parquet file written a row group at a time, renamed into place only once it is complete."""

    def __init__(self, path: Path):
        self._context = atomic_path(path)
        self._buffer: list[pa.Table] = []
        self._rows = 0
        self._writer = None

    def __enter__(self):
        import pyarrow.parquet as pq

        self._tmp = self._context.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, SCHEMA)
        return self

    def write(self, table: pa.Table) -> None:
        self._buffer.append(table)
        self._rows += table.num_rows
        if self._rows >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(pa.concat_tables(self._buffer), row_group_size=ROW_GROUP)
        self._buffer, self._rows = [], 0

    def __exit__(self, kind, value, trace):
        if kind is None:
            self._flush()
        self._writer.close()
        return self._context.__exit__(kind, value, trace)


def all_parts_written(options: SynthesisOptions) -> bool:
    return all(part_path(options.out, b).is_file() for b in range(options.n_batches))


def merge(options: SynthesisOptions, record: dict, grid: VolumeGrid, judge_heldout: dict | None) -> Tally:
    """Write metadata.parquet (+ rejected.parquet with --reject-off-prompt), prepare.json and README.md."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from dallebrain.synthesize.card import write_card

    out = Path(options.out)
    tally = Tally()
    rejected_path = out / "rejected.parquet"
    with contextlib.ExitStack() as stack:
        kept = stack.enter_context(_StreamingParquet(out / "metadata.parquet"))
        rejected = stack.enter_context(_StreamingParquet(rejected_path)) if options.reject_off_prompt else None
        for b in range(options.n_batches):
            table = pq.read_table(part_path(out, b), schema=SCHEMA)
            if rejected is not None:
                off = pc.equal(table["on_prompt"], False)
                tally.add(table.filter(off), kept=False)
                rejected.write(table.filter(off))
                table = table.filter(pc.invert(off))
            tally.add(table, kept=True)
            kept.write(table)
    write_json_atomic(out / "prepare.json", {
        "source": "synthetic", "size": grid.shape[0], "seed": options.seed,
        "grid": {"shape": list(grid.shape), "spacing_mm": grid.spacing_mm, "origin_mm": list(grid.origin_mm)}})
    write_card(out, options, record, tally, judge_heldout)
    return tally

