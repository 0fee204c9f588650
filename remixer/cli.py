"""`musicgen-remix`: remix a song from the command line (the same inputs as the Cog predictor)."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from remixer.request import INPUTS, RemixRequest, RequestError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musicgen-remix",
        description="Remix SONG in the style of --prompt, keeping its vocals, chords and bars.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    parser.add_argument("--weights-dir", default=None, help="model weights folder (default $REMIXER_WEIGHTS_DIR "
                        "or ./weights; missing files are downloaded)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--offline", action="store_true", help="never download weights")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
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
    try:
        remixer = Remixer(args.weights_dir, args.device, offline=args.offline or None)
        remixer.log_setup()
        with _ProgressBar() as bar:
            result = remixer.remix(request, output.parent / f".{output.name}.work", progress=bar.update)
    except RemixerError as error:  # every user-facing error: the message, not a traceback
        print(f"musicgen-remix: {error}", file=sys.stderr)
        return 1
    work = result.remix.parent
    shutil.move(str(result.remix), output)
    print(f"remix: {output}")
    extra = {"instrumental": result.instrumental, **result.stems, "analysis": result.analysis_json,
             "analysis picture": result.analysis_png}
    for name, path in extra.items():
        if path is not None:  # beside the remix: song.remix.wav -> song.remix.drums.wav, .analysis.json, ...
            target = output.with_name(f"{output.stem}.{name.split()[0]}{path.suffix}")
            shutil.move(str(path), target)
            print(f"{name}: {target}")
    shutil.rmtree(work, ignore_errors=True)
    print(summary(result))
    print(f"seed: {result.seed}  (pass --seed {result.seed} to reproduce)")
    return 0


def summary(result) -> str:
    """What the song turned out to be, in a few lines: tempo, meter, bars, sections, chords, stage times."""
    found = result.analysis
    tempo = f"{found.bpm:.1f} bpm" if found.bpm else "no beat found"
    meter = f", {found.meter}/4" if found.meter else ""
    sections = ", ".join(dict.fromkeys(s.label for s in found.sections)) or "none found"
    chords = " ".join(dict.fromkeys(c.label for c in found.chords if c.label not in {"N", "X"})) or "none"
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.timings.items())
    return (f"song: {tempo}{meter}, {len(found.downbeats)} bars; sections: {sections}\n"
            f"chords ({'given' if found.chords_given else 'recognised'}): {chords}\n"
            f"stages: {stages}")


class _ProgressBar:
    """A tqdm bar over generated tokens."""

    def __enter__(self):
        self.bar = None
        return self

    def update(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="tok", desc="generating", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


if __name__ == "__main__":
    sys.exit(main())
