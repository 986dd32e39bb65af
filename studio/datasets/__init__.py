"""Datasets: import what people have (Alpaca, ShareGPT, OpenAI/HF messages, LLaVA, caption tables,
image folders; as JSON, JSONL, CSV/TSV, Parquet or zip), convert it to the one canonical chat form,
validate every row before anything is saved, preview, and measure token lengths.

Public API (plain functions; ``db`` is a ``storage.db.Database``)::

    import_dataset(db, path, ImportOptions(...)) -> ImportResult
    import_upload(db, received_file, name, ImportOptions(...)) -> ImportResult   (the browser's upload)
    list_datasets(db) / get_dataset(db, id) / rename_dataset(db, id, name) / delete_dataset(db, id)
    preview(db, id, n=20, offset=0) / statistics(db, id, processor, cutoff_len=...) / read_canonical(db, id)
"""
from studio.datasets.options import ArchiveLimits, ImportOptions, RowLimits
from studio.datasets.problems import DatasetImportError, Problem
from studio.datasets.service import (
    DatasetNotFound,
    ImportResult,
    dataset_dir,
    delete_dataset,
    get_dataset,
    import_dataset,
    import_upload,
    list_datasets,
    load_report,
    preview,
    read_canonical,
    rename_dataset,
    statistics,
)

__all__ = [
    "ArchiveLimits", "DatasetImportError", "DatasetNotFound", "ImportOptions", "ImportResult", "Problem", "RowLimits",
    "dataset_dir", "delete_dataset", "get_dataset", "import_dataset", "import_upload", "list_datasets", "load_report", "preview",
    "read_canonical", "rename_dataset", "statistics",
]
