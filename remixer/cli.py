"""`musicgen-remix`: remix a song from the command line (the same inputs as the Cog predictor)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from remixer.mix import describe as describe_mix
from remixer.options import add_setup_flags, setup_logging, use_mirror
from remixer.request import INPUTS, RemixRequest, RequestError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musicgen-remix",
        description="Remix SONG in the style of --prompt, keeping its vocals, chords and bars.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Many songs: musicgen-remix batch MANIFEST --out DIR (see musicgen-remix batch --help). "
               "In the browser: musicgen-remix app (see musicgen-remix app --help). The model files: "
               "musicgen-remix weights --check (see musicgen-remix weights --help).",
    )
    parser.add_argument("music_input", metavar="SONG",
                        help=next(s for s in INPUTS if s.name == "music_input").description)
    for spec in INPUTS:
        if spec.name == "music_input":
            continue
        flag = "--" + spec.name.replace("_", "-")
        if spec.type is bool:
            if spec.default:
                parser.add_argument("--no-" + spec.name.replace("_", "-"), dest=spec.name, action="store_false",
                                    help=f"turn off: {spec.description}")
            else:
                parser.add_argument(flag, dest=spec.name, action="store_true", help=spec.description)
            parser.set_defaults(**{spec.name: spec.default})
            continue
        limits = "".join([f" (>= {spec.ge})" if spec.ge is not None else "",
                          f" (<= {spec.le})" if spec.le is not None else ""])
        parser.add_argument(flag, dest=spec.name, type=spec.type, default=spec.default, required=spec.required,
                            choices=spec.choices, help=spec.description + limits)
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the remix (default: SONG's name + '.remix.<format>' in the current "
                             "folder); the instrumental goes beside it")
    add_setup_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`musicgen-remix`: 0 done, 1 a remix error (one line), 2 bad inputs; `batch` and `app` have their own."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["batch"]:  # a song named "batch" is ./batch
        return batch_main(argv[1:])
    if argv[:1] == ["weights"]:  # a song named "weights" is ./weights
        from remixer.weights import main as weights_main

        return weights_main(argv[1:], prog="musicgen-remix weights")
    if argv[:1] == ["app"]:  # a song named "app" is ./app
        from remixer.app import main as app_main

        return app_main(argv[1:])
    args = _parser().parse_args(argv)
    setup_logging()
    if not use_mirror(args):
        return 2
    values = {spec.name: getattr(args, spec.name) for spec in INPUTS}
    try:
        request = RemixRequest.from_inputs(**values)
    except RequestError as error:
        print(f"musicgen-remix: {error}", file=sys.stderr)
        return 2

    from remixer.errors import RemixerError
    from remixer.pipeline import Remixer

    song = Path(request.music_input)
    output = args.output or Path.cwd() / f"{song.stem}.remix.{request.output_format}"
    work = output.parent / f".{output.name}.work"
    try:
        remixer = Remixer(args.weights_dir, args.device, offline=args.offline or None)
        remixer.log_setup()
        with _ProgressBar() as bar:
            result = remixer.remix(request, work, progress=bar.update)
    except RemixerError as error:  # every user-facing error: the message, not a traceback
        shutil.rmtree(work, ignore_errors=True)
        print(f"musicgen-remix: {error}", file=sys.stderr)
        return 1
    except BaseException:  # Ctrl-C, or a bug: nothing of this request stays beside the song
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.move(str(result.remix), output)
    print(f"remix: {output}")
    labels = {"analysis_json": "analysis", "analysis_png": "analysis picture"}
    for name, path in list(result.named_outputs.items())[1:]:
        # beside the remix: song.remix.wav -> song.remix.drums.wav, .song-drums.wav (kept), .analysis.json
        part = "analysis" if name.startswith("analysis_") else name.replace("_", "-")
        target = output.with_name(f"{output.stem}.{part}{path.suffix}")
        shutil.move(str(path), target)
        print(f"{labels.get(name, name)}: {target}")
    shutil.rmtree(work, ignore_errors=True)
    print(summary(result))
    print(f"seed: {result.seed}  (pass --seed {result.seed} to reproduce)")
    return 0


def summary(result) -> str:
    """What the song turned out to be, in a few lines: tempo, meter, bars, sections, chords, stage times."""
    found = result.analysis
    tempo = f"{found.bpm:.1f} bpm" if found.bpm else "no beat found"
    meter = f", {found.meter}/4" if found.meter else ""
    sections = (", ".join(dict.fromkeys(s.label for s in found.sections)) or "none found") if found.finds_sections \
        else f"not looked for ({found.beat_tracker} finds none)"
    chords = " ".join(dict.fromkeys(c.label for c in found.chords if c.label not in {"N", "X"})) or "none"
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.timings.items())
    lines = [f"song: {tempo}{meter}, {len(found.downbeats)} bars ({found.beat_tracker}); sections: {sections}",
             f"kept from the song: vocals, {', '.join(found.kept)}" if found.kept else "kept from the song: vocals",
             f"output: {result.sample_rate} Hz",
             *([f"mix: {describe_mix(found.mix)}"] if found.mix else []),
             *([f"decoder: {found.decoder['precision']} weights on the {found.decoder['device'].upper()}"]
               if found.decoder else []),
             f"chords ({'given' if found.chords_given else 'recognised'}): {chords}"]
    change = found.key_tempo or {}
    if change.get("transpose") or change.get("time_factor", 1.0) != 1.0:
        lines.append(f"key and tempo: {change['transpose']:+d} semitones; tempo {change['original_bpm']:.1f} -> "
                     f"{change['bpm']:.1f} bpm (timeline x{change['time_factor']:.3f})"
                     if change["time_factor"] != 1.0 else f"key and tempo: {change['transpose']:+d} semitones")
    if result.fidelity is not None:
        lines.append(f"fidelity: {result.fidelity.summary()}")
        if result.fidelity.unmeasured:
            lines.append(f"  not measured: {result.fidelity.unmeasured}")
    if len(result.takes) > 1:
        lines.append("takes (best first): " + ", ".join(
            f"take {t.index} score {t.fidelity.score:.2f}{' (returned)' if t.rank == 1 else ''}"
            for t in result.takes))
    lines.append(f"stages: {stages}")
    return "\n".join(lines)


def _batch_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musicgen-remix batch",
        description="Remix every row of MANIFEST (CSV or JSON Lines: one remix per row, columns named after the "
                    "inputs of a single remix plus an optional id) on a pool of Ray workers. Each row's outputs go "
                    "to DIR/<id>/ and a line in DIR/results.jsonl; running the same command again skips the rows "
                    "already done with the same inputs and retries the failed ones.",
        epilog="Columns: id, " + ", ".join(spec.name for spec in INPUTS) + ". Empty cells take the defaults; "
               "relative song paths are read from the manifest's folder.",
    )
    parser.add_argument("manifest", type=Path, metavar="MANIFEST", help="a .csv or .jsonl file")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the outputs and "
                        "results.jsonl go (on a cluster: storage every node can write)")
    parser.add_argument("--workers", type=int, default=None, help="how many remixes run at once (default: one "
                        "per GPU, or 1 on a machine without GPUs)")
    parser.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs each worker holds (default: 1 "
                        "where the cluster has GPUs, else 0: the CPU)")
    parser.add_argument("--cpus-per-worker", type=float, default=None,
                        help="CPU cores each worker holds (default: the cluster's cores shared out)")
    parser.add_argument("--address", default=None, help="join a running Ray cluster: 'auto' on one of its nodes, "
                        "or ray://HOST:10001 (default: start Ray on this machine for this run)")
    add_setup_flags(parser, device=False,
                    weights_help="on a cluster: shared storage; missing files are downloaded once")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def batch_main(argv: list[str]) -> int:
    """`musicgen-remix batch`: 0 when every row is done, 1 when some failed, 2 for a bad manifest, 130 stopped."""
    args = _batch_parser().parse_args(argv)
    setup_logging()
    if not use_mirror(args):
        return 2
    from remixer.batch import run_batch
    from remixer.errors import RemixerError
    from remixer.manifest import ManifestError

    try:
        summary = run_batch(args.manifest, args.out, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                            cpus_per_worker=args.cpus_per_worker, address=args.address, weights_dir=args.weights_dir,
                            offline=args.offline or None, progress=not args.quiet)
    except ManifestError as error:
        print(f"musicgen-remix batch: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before any row ran (reading the manifest, fetching weights, starting Ray)
        print("musicgen-remix batch: stopped before any row ran", file=sys.stderr)
        return 130
    except RemixerError as error:
        print(f"musicgen-remix batch: {error}", file=sys.stderr)
        return 1
    print(batch_summary(summary))
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0


def batch_summary(summary) -> str:
    """What a batch run did, in a few lines: counts, the failed rows with their errors, where results are."""
    lines = [f"{summary.total} rows: {len(summary.ok)} remixed, {len(summary.failed)} failed, "
             f"{len(summary.skipped)} done before (skipped) in {summary.seconds:.1f} s"
             + (f" on {summary.plan.workers} worker(s)" if summary.plan else "")]
    if summary.interrupted:
        lines.append(f"stopped: {len(summary.abandoned)} row(s) left unfinished (nothing of them was kept); "
                     "run the same command again to go on")
    lines += [f"failed {row_id}: {error}" for row_id, error in summary.failed.items()]
    lines.append(f"results: {summary.results}")
    return "\n".join(lines)


class _ProgressBar:
    """A tqdm bar over generated tokens, closed as soon as the last token is generated (the stages after
    generation log on lines of their own)."""

    def __enter__(self):
        self.bar = None
        self.closed = False
        return self

    def update(self, done: int, total: int) -> None:
        """Tokens done of all: the bar is made on the first call and closed at the last token."""
        from tqdm import tqdm

        if self.closed:
            return
        if self.bar is None:
            self.bar = tqdm(total=total, unit="tok", desc="generating", file=sys.stderr)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        """Close the bar once (idempotent)."""
        if self.bar is not None and not self.closed:
            self.bar.close()
        self.closed = True

    def __exit__(self, *exc):
        self.close()
        return False


if __name__ == "__main__":
    sys.exit(main())
