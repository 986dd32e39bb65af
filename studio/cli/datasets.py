"""``python -m studio dataset ...``: import, list, show and delete datasets.

    python -m studio dataset import uploads/data.json --val-fraction 0.1 --dedupe
    python -m studio dataset import ~/photos.zip --copy --instruction "Caption this photo."
    python -m studio dataset import ~/llava/data.json --copy --image-root ~/llava/images
    python -m studio dataset list
    python -m studio dataset show 3 --rows 2
    python -m studio dataset delete 3
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_REFUSED = 2
EXIT_NOT_FOUND = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser("dataset", help="import, list, show and delete datasets")
    sub = parser.add_subparsers(dest="dataset_command", required=True)
    _add_import(sub)
    p = _with_workspace(sub.add_parser("list", help="list datasets"))
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)
    p = _with_workspace(sub.add_parser("show", help="show one dataset: counts, import report, first rows"))
    p.add_argument("id", type=int)
    p.add_argument("--rows", type=int, default=3, help="how many rows to print (default 3)")
    p.set_defaults(func=cmd_show)
    p = _with_workspace(sub.add_parser("delete", help="delete a dataset and its files"))
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_delete)


def _with_workspace(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    # SUPPRESS: if not given here, a --workspace given before the subcommand is kept.
    p.add_argument("--workspace", default=argparse.SUPPRESS, help="workspace folder (default: $FTS_WORKSPACE)")
    return p


def _add_import(sub) -> None:
    from studio.datasets.formats import FORMAT_NAMES
    from studio.datasets.options import DEFAULT_INSTRUCTION, RowLimits

    p = _with_workspace(sub.add_parser("import", help="import a data file, folder or zip"))
    p.add_argument("file", help="data file, folder or .zip (inside the workspace, or use --copy)")
    p.add_argument("--format", choices=FORMAT_NAMES, help="input format (default: detect)")
    p.add_argument("--name", help="dataset name (default: the file name)")
    p.add_argument("--val-fraction", type=float, default=0.0, help="share of rows for validation (0..1)")
    p.add_argument("--seed", type=int, default=42, help="seed of the train/validation split")
    p.add_argument("--dedupe", action="store_true", help="remove exact duplicate rows")
    p.add_argument("--limit", type=int, help="keep at most N rows")
    p.add_argument("--skip-bad-rows", action="store_true", help="import the good rows, report the bad ones")
    p.add_argument("--instruction", default=DEFAULT_INSTRUCTION, help="user prompt for caption data")
    p.add_argument("--map", action="append", default=[], metavar="COL=FIELD",
                   help="rename a column to a format field, e.g. --map prompt=instruction (repeatable)")
    p.add_argument("--image-root", metavar="FOLDER",
                   help="folder that relative image paths are read from (like LLaVA's --image_folder); default: "
                        "the data file's folder, then its parent folders up to the upload's root")
    p.add_argument("--max-text-kib", type=int, default=RowLimits.max_text_bytes // 1024,
                   help="longest text field accepted, in KiB (default %(default)s)")
    p.add_argument("--copy", action="store_true",
                   help="import a file or folder from outside the workspace: the data and the images its rows "
                        "name are copied into the dataset (nothing is left behind if the import fails)")
    p.set_defaults(func=cmd_import)


def _open_db(args):
    from storage.db import Database

    return Database.open(getattr(args, "workspace", None), getattr(args, "db_url", None))


def parse_map(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        col, sep, fieldname = item.partition("=")
        if not sep or not col.strip() or not fieldname.strip():
            raise SystemExit(f"--map expects COLUMN=FIELD, got {item!r}")
        mapping[col.strip()] = fieldname.strip()
    return mapping


def cmd_import(args) -> int:
    from studio.datasets import DatasetImportError, ImportOptions, RowLimits, import_dataset
    from storage.workspace import OutsideWorkspaceError

    db = _open_db(args)
    options = ImportOptions(name=args.name, format=args.format, column_map=parse_map(args.map),
                            instruction=args.instruction, val_fraction=args.val_fraction, seed=args.seed,
                            dedupe=args.dedupe, limit=args.limit, on_error="skip" if args.skip_bad_rows else "fail",
                            image_root=_image_root(args.image_root),
                            rows=RowLimits(max_text_bytes=args.max_text_kib * 1024))
    try:
        result = import_dataset(db, _data_path(args.file, db.workspace.root), options, external=args.copy)
    except OutsideWorkspaceError as e:
        print(f"error: {e} (or pass --copy)", file=sys.stderr)
        return EXIT_REFUSED
    except DatasetImportError as e:
        print(e, file=sys.stderr)
        return EXIT_REFUSED
    print_report(result)
    return 0


def print_report(result) -> None:
    d, r = result.dataset, result.report
    print(f"imported dataset {d.id} {d.name!r}: {d.num_rows} rows ({d.num_train} train, {d.num_validation} "
          f"validation), format {d.format}, {d.num_images} images")
    print(r.accounting())
    if r.images_note():
        print(r.images_note())
    if r.skipped:
        print(f"skipped {r.skipped} bad rows: {r.skipped_by_code}")
        for p in r.problems[:10]:
            print(f"  {p['file']} row {p['row']}: {p['message']}")
    if r.duplicates_removed:
        pairs = [f"row {x['row']} = row {x['of_row']}" for x in r.dropped if x["reason"] == "duplicate"]
        more = f", ... ({r.duplicates_removed - 10} more in the report)" if len(pairs) > 10 else ""
        print(f"removed {r.duplicates_removed} duplicate rows: {', '.join(pairs[:10])}{more}")
    for x in r.dropped:
        if x["reason"] == "over_limit":
            print(f"rows {x['rows']} were left out: over the row limit of {d.num_rows}")


def _data_path(given: str, workspace_root: Path) -> str:
    """Relative to the workspace (as the services read it), or else to where the command runs."""
    path = Path(given).expanduser()
    if path.is_absolute():
        return str(path)
    if (workspace_root / path).exists() or not path.exists():
        return str(workspace_root / path)
    return str(path.resolve())


def _image_root(given: str | None) -> str | None:
    """A folder named on the command line is relative to where the command runs."""
    if given is None:
        return None
    path = Path(given).expanduser()
    return str(path.resolve()) if not path.is_absolute() and path.exists() else str(path)


def cmd_list(args) -> int:
    from studio.datasets import list_datasets

    rows = list_datasets(_open_db(args))
    if args.json:
        print(json.dumps([_summary(d) for d in rows], indent=1, default=str))
        return 0
    print(f"{'id':>4}  {'name':<30} {'format':<12} {'rows':>8} {'train':>8} {'val':>6} {'images':>7}")
    for d in rows:
        print(f"{d.id:>4}  {d.name[:30]:<30} {d.format:<12} {d.num_rows:>8} {d.num_train:>8} "
              f"{d.num_validation:>6} {d.num_images:>7}")
    return 0


def _summary(d) -> dict:
    return {k: getattr(d, k) for k in ("id", "name", "source", "format", "path", "num_rows", "num_train",
                                       "num_validation", "num_images", "num_skipped", "size_bytes",
                                       "has_images", "created_at")}


def cmd_show(args) -> int:
    from studio.datasets import DatasetNotFound, get_dataset, preview

    db = _open_db(args)
    try:
        d = get_dataset(db, args.id)
    except DatasetNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(json.dumps({**_summary(d), "report": d.info.get("report", {})}, indent=1, default=str))
    for row in preview(db, d.id, n=args.rows):
        print(json.dumps(row, ensure_ascii=False))
    return 0


def cmd_delete(args) -> int:
    from studio.datasets import DatasetNotFound, delete_dataset

    try:
        delete_dataset(_open_db(args), args.id)
    except DatasetNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"deleted dataset {args.id}")
    return 0
