"""A blinded reader study in one SQLite file: can a radiologist tell real held-out slices from synthetic ones?

A study folder holds `study.sqlite` and `images/`. Items are a shuffled mix of real slices from a prepared data
set's test split and synthetic slices generated from the captions of other test slices. Every item image is
written the same way (8-bit grey PNG, the real slices' size, a random file name), so neither the file nor its
name tells real from synthetic or names a subject. What a reader sees of an item is its image and the stated
contrast; the subject, the source file and the caption stay in the database.

Example:
    >>> study = Study.create("study", "prepared", n_items=20)
    >>> study.materialise(lambda prompt, seed: pipe(prompt, seed=seed).images[0])  # synthetic items, once
    >>> item = study.next_item("Dr A")
    >>> study.submit("Dr A", item.item_id, "synthetic", plausibility=4, contrast_ok=True, seconds=12.5)
    >>> study.summary()  # the page asks for study.organiser_code first
"""

from __future__ import annotations

import csv
import secrets
import sqlite3
import zlib
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from dallebrain.app.untrusted import csv_cell
from dallebrain.data.io import atomic_path

CONTRAST_NAMES = {"T1w": "T1-weighted", "T2w": "T2-weighted", "PDw": "PD-weighted", "FLAIR": "FLAIR"}
MAX_READER_NAME = 80

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS readers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    truth TEXT NOT NULL CHECK (truth IN ('real', 'synthetic')),
    contrast TEXT NOT NULL,      -- the stated contrast (modality code), the only thing shown besides the image
    orientation TEXT NOT NULL,
    image_file TEXT,             -- name under images/; NULL until a synthetic item is generated
    prompt TEXT,                 -- synthetic: the caption it is generated from (never shown)
    seed INTEGER,                -- synthetic: the generation seed
    source TEXT                  -- real: the prepared slice copied (never shown, never exported)
);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY,
    reader_id INTEGER NOT NULL REFERENCES readers(id),
    item_id INTEGER NOT NULL REFERENCES items(id),
    answer TEXT NOT NULL CHECK (answer IN ('real', 'synthetic')),
    plausibility INTEGER NOT NULL CHECK (plausibility BETWEEN 1 AND 5),
    contrast_ok INTEGER NOT NULL CHECK (contrast_ok IN (0, 1)),
    seconds REAL,                -- time from the item being shown to the answer
    answered_at TEXT NOT NULL,   -- UTC, ISO 8601
    UNIQUE (reader_id, item_id)
);
"""

EXPORT_COLUMNS = ["reader", "item", "truth", "answer", "correct", "plausibility", "contrast_ok", "stated_contrast",
                  "orientation", "seconds", "answered_at"]


@dataclass(frozen=True)
class ShownItem:
    """What the page may show of an item: no subject, no source path, no caption."""

    item_id: int
    image: Path
    stated_contrast: str  # e.g. "T2-weighted"
    number: int  # 1-based position in this reader's sequence
    total: int


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_item_png(image: np.ndarray, path: Path, size: int) -> None:
    """Real and synthetic items alike: [0, 1] floats -> 8-bit PNG of the common size, no metadata."""
    from PIL import Image

    image = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    if image.shape != (size, size):
        from skimage.transform import resize

        image = resize(image, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    tmp = path.with_suffix(".tmp")
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(tmp, format="PNG")
    tmp.replace(path)


def clean_reader_name(name: str) -> str:
    name = " ".join(str(name or "").split())
    if not name:
        raise ValueError("enter a reader name (your name or an agreed pseudonym) to start")
    if len(name) > MAX_READER_NAME:
        raise ValueError(f"reader name is too long ({len(name)} characters, at most {MAX_READER_NAME})")
    return name


class Study:
    """One study folder; every call opens its own SQLite connection, so gradio's worker threads can share it."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.db = self.folder / "study.sqlite"
        if not self.db.is_file():
            raise ValueError(f"no study in {self.folder} (study.sqlite missing)")

    # --- creation ---------------------------------------------------------------------------------------

    @classmethod
    def create(cls, folder: str | Path, prepared: str | Path, n_items: int = 20, seed: int = 0,
               split: str = "test") -> Study:
        """A new study of n_items (half real, half synthetic, shuffled) from `prepared`'s split. The synthetic
        items are only registered here (prompt and seed); `materialise` generates them."""
        from dallebrain.data.dataset import SliceDataset

        folder = Path(folder)
        if (folder / "study.sqlite").exists():
            raise ValueError(f"a study already exists in {folder}: open it instead")
        if n_items < 2 or n_items > 1000:
            raise ValueError(f"a study needs between 2 and 1000 items, got {n_items}")
        data = SliceDataset(prepared, split)
        rng = np.random.default_rng(seed)
        n_real = n_items // 2
        n_synthetic = n_items - n_real
        rows = rng.permutation(len(data))
        real_rows = rows[:n_real] if len(rows) >= n_real else rng.choice(len(data), n_real)
        # Synthetic items take the captions of other test slices where there are enough, so a real slice and
        # its synthetic twin are not shown side by side.
        rest = rows[n_real:]
        caption_rows = rest[:n_synthetic] if len(rest) >= n_synthetic else rng.choice(len(data), n_synthetic)
        size = data.image_size
        items = [("real", int(r)) for r in real_rows] + [("synthetic", int(r)) for r in caption_rows]
        order = rng.permutation(len(items))

        (folder / "images").mkdir(parents=True, exist_ok=True)
        db = folder / "study.sqlite"
        with closing(sqlite3.connect(db)) as con, con:
            con.executescript(SCHEMA)
            # the summary and the export show which items were real: readers must not see them mid-study
            meta = {"created_at": _now(), "prepared": str(Path(prepared).resolve()), "split": split,
                    "seed": str(seed), "image_size": str(size), "organiser_code": secrets.token_urlsafe(6)}
            con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            for k in order:
                truth, row = items[k]
                record = data.table.iloc[row]
                if truth == "real":
                    name = f"item-{secrets.token_hex(8)}.png"
                    _write_item_png(data.image(row), folder / "images" / name, size)
                    values = (truth, record["modality"], record["orientation"], name, None, None,
                              str(record["image_path"]))
                else:
                    values = (truth, record["modality"], record["orientation"], None, str(record["caption"]),
                              int(rng.integers(2**31)), None)
                con.execute("INSERT INTO items (truth, contrast, orientation, image_file, prompt, seed, source) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", values)
        return cls(folder)

    @classmethod
    def open_or_create(cls, folder: str | Path, prepared: str | Path | None, n_items: int = 20,
                       seed: int = 0) -> Study:
        if (Path(folder) / "study.sqlite").is_file():
            return cls(folder)
        if prepared is None:
            raise ValueError("no study yet: give a prepared data set (--data) to create one")
        return cls.create(folder, prepared, n_items, seed)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db, timeout=30)
        con.execute("PRAGMA foreign_keys = ON")
        return con

    def meta(self) -> dict[str, str]:
        with closing(self._connect()) as con:
            return dict(con.execute("SELECT key, value FROM meta").fetchall())

    @property
    def organiser_code(self) -> str:
        """The code that opens the summary and the export on the page (printed when the server starts)."""
        return self.meta()["organiser_code"]

    def check_organiser(self, code) -> None:
        if not code or not secrets.compare_digest(str(code).strip(), self.organiser_code):
            raise ValueError("wrong organiser code: the summary and the export are for the study organiser (the "
                             "code is printed when the server starts)")

    def pending_synthetic(self) -> int:
        with closing(self._connect()) as con:
            return con.execute("SELECT COUNT(*) FROM items WHERE image_file IS NULL").fetchone()[0]

    def materialise(self, generate: Callable[[str, int], np.ndarray]) -> int:
        """Generate every synthetic item not generated yet, with generate(prompt, seed) -> (H, W) in [0, 1];
        returns how many were made. All at once rather than item by item: a reader must not be able to tell a
        synthetic item by the pause before it appears."""
        size = int(self.meta()["image_size"])
        with closing(self._connect()) as con:
            todo = con.execute("SELECT id, prompt, seed FROM items WHERE image_file IS NULL ORDER BY id").fetchall()
        for item_id, prompt, seed in todo:
            name = f"item-{secrets.token_hex(8)}.png"
            _write_item_png(generate(prompt, seed), self.folder / "images" / name, size)
            with closing(self._connect()) as con, con:
                con.execute("UPDATE items SET image_file = ? WHERE id = ?", (name, item_id))
        return len(todo)

    # --- readers and answers ----------------------------------------------------------------------------

    def reader_id(self, name: str, create: bool = True) -> int:
        name = clean_reader_name(name)
        with closing(self._connect()) as con, con:
            row = con.execute("SELECT id FROM readers WHERE name = ?", (name,)).fetchone()
            if row:
                return row[0]
            if not create:
                raise ValueError(f"unknown reader {name!r}")
            return con.execute("INSERT INTO readers (name, created_at) VALUES (?, ?)", (name, _now())).lastrowid

    def _reader_order(self, name: str) -> list[int]:
        """This reader's item sequence: the study's items in an order of their own (seeded by the name), so
        order effects do not line up across readers."""
        with closing(self._connect()) as con:
            ids = [r[0] for r in con.execute("SELECT id FROM items ORDER BY id")]
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        return [ids[i] for i in rng.permutation(len(ids))]

    def next_item(self, name: str) -> ShownItem | None:
        """The next unanswered item for this reader, or None when they have answered all."""
        name = clean_reader_name(name)
        reader = self.reader_id(name)
        order = self._reader_order(name)
        with closing(self._connect()) as con:
            done = {r[0] for r in con.execute("SELECT item_id FROM answers WHERE reader_id = ?", (reader,))}
            for number, item_id in enumerate(order, start=1):
                if item_id in done:
                    continue
                image_file, contrast = con.execute("SELECT image_file, contrast FROM items WHERE id = ?",
                                                   (item_id,)).fetchone()
                if image_file is None:
                    raise RuntimeError("synthetic items are not generated yet (materialise the study first)")
                return ShownItem(item_id, self.folder / "images" / image_file,
                                 CONTRAST_NAMES.get(contrast, contrast), number, len(order))
        return None

    def progress(self, name: str) -> tuple[int, int]:
        """(answered, total) for a reader."""
        reader = self.reader_id(name)
        with closing(self._connect()) as con:
            done = con.execute("SELECT COUNT(*) FROM answers WHERE reader_id = ?", (reader,)).fetchone()[0]
            total = con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        return done, total

    def submit(self, name: str, item_id: int, answer: str, plausibility: int, contrast_ok: bool,
               seconds: float | None = None) -> None:
        """Store one answer; a second answer of the same reader to the same item is refused."""
        if answer not in ("real", "synthetic"):
            raise ValueError("answer 'real or synthetic?' first")
        if plausibility is None or int(plausibility) != plausibility or not 1 <= int(plausibility) <= 5:
            raise ValueError("rate the anatomical plausibility from 1 to 5 first")
        if contrast_ok not in (True, False):
            raise ValueError("answer 'is the contrast the stated one?' first")
        reader = self.reader_id(name)
        try:
            with closing(self._connect()) as con, con:
                if con.execute("SELECT 1 FROM items WHERE id = ?", (int(item_id),)).fetchone() is None:
                    raise ValueError(f"no item {item_id} in this study")
                con.execute("INSERT INTO answers (reader_id, item_id, answer, plausibility, contrast_ok, seconds, "
                            "answered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (reader, int(item_id), answer, int(plausibility), int(contrast_ok),
                             None if seconds is None else round(float(seconds), 3), _now()))
        except sqlite3.IntegrityError as exc:
            raise ValueError("this item is already answered by this reader") from exc

    # --- results ----------------------------------------------------------------------------------------

    def answers(self):
        """Every answer joined with its item's truth (a pandas DataFrame, columns EXPORT_COLUMNS)."""
        import pandas as pd

        with closing(self._connect()) as con:
            table = pd.read_sql_query(
                "SELECT r.name AS reader, a.item_id AS item, i.truth, a.answer, a.plausibility, a.contrast_ok, "
                "i.contrast AS stated_contrast, i.orientation, a.seconds, a.answered_at "
                "FROM answers a JOIN readers r ON r.id = a.reader_id JOIN items i ON i.id = a.item_id "
                "ORDER BY a.id", con)
        table["stated_contrast"] = table["stated_contrast"].map(lambda c: CONTRAST_NAMES.get(c, c))
        table["correct"] = table["answer"] == table["truth"]
        table["contrast_ok"] = table["contrast_ok"].astype(bool)
        return table[EXPORT_COLUMNS]

    def summary(self):
        """Accuracy at telling real from synthetic against chance (50 %, two-sided exact binomial test), over all
        answers, per reader, by stated contrast and by orientation; with mean plausibility of the real and the
        synthetic items and how often the stated contrast was confirmed."""
        import pandas as pd
        from scipy.stats import binomtest

        table = self.answers()
        groups = [("all", "all", table)]
        for column, label in (("reader", "reader"), ("stated_contrast", "contrast"), ("orientation", "orientation")):
            groups += [(label, str(value), part) for value, part in table.groupby(column, sort=True)]
        rows = []
        for kind, value, part in groups:
            n = len(part)
            correct = int(part["correct"].sum())
            real, synthetic = part[part["truth"] == "real"], part[part["truth"] == "synthetic"]
            rows.append({
                "group": kind, "value": value, "answers": n, "correct": correct,
                "accuracy": correct / n if n else float("nan"),
                "p_value": binomtest(correct, n, 0.5).pvalue if n else float("nan"),
                "plausibility_real": real["plausibility"].mean() if len(real) else float("nan"),
                "plausibility_synthetic": synthetic["plausibility"].mean() if len(synthetic) else float("nan"),
                "contrast_confirmed": part["contrast_ok"].mean() if n else float("nan"),
            })
        return pd.DataFrame(rows)

    def export_csv(self, path: str | Path) -> Path:
        """All answers as CSV (no subject, no source path): one row per answer, columns EXPORT_COLUMNS. Reader
        names come from the page, so a cell a spreadsheet would run as a formula is made inert (csv_cell)."""
        path = Path(path)
        table = self.answers()
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(EXPORT_COLUMNS)
            writer.writerows([csv_cell(v) for v in row] for row in table.itertuples(index=False, name=None))
        return path
