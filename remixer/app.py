"""`musicgen-remix app`: remix from the browser (Gradio). One page: drop a song, write a style, hear the remix
next to the original, compare the takes, see the song's picture, download every file.

The inputs come from the one input table (remixer.request.INPUTS), so a new input appears here by itself.
One request runs at a time (Gradio's queue shows the others their place); each browser session gets a
temporary folder, removed when the page is closed or the app stops.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remixer.errors import RemixerError
from remixer.options import add_setup_flags, setup_logging, use_mirror
from remixer.request import INPUTS, KEEPABLE, SPECS, UNSET, InputSpec, RemixRequest, kept_parts

log = logging.getLogger("remixer")

STYLE_EXAMPLES = ["bossa nova with nylon guitar and soft brushes", "80s synth-pop, gated drums, analog bass",
                  "acoustic folk, fingerpicked guitar and fiddle", "deep house, four-on-the-floor, warm pads",
                  "big band swing with horns"]
MAIN_INPUTS = ("music_input", "prompt", "model_version")  # on the page itself; the rest under "Advanced"
# The page's own defaults where they differ from the table's: it shows the song's picture, so it asks for it.
PAGE_DEFAULTS = {"return_analysis": True}
MAX_TAKE_PLAYERS = SPECS["takes"].le
STEMS = ("drums", "bass", "other", "vocals")
WARN_OPEN = ("the app listens on {host}: anyone who can reach this machine can use it; there is no "
             "authentication")


class Cancelled(RemixerError):
    """The user pressed Cancel."""


@dataclass
class Session:
    """One browser session's folder and cancel flag."""

    folder: Path
    cancel: threading.Event = field(default_factory=threading.Event)
    requests: int = 0


class App:
    """The page's logic, apart from Gradio so that it reads (and tests) as plain Python."""

    def __init__(self, remixer, root: Path):
        self.remixer = remixer
        self.root = root
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        # One remix at a time even when a cancelled one is still unwinding (Gradio frees its queue slot at once).
        self._running = threading.Lock()
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)  # the stage lines are the progress bar's text

    def session(self, key: str) -> Session:
        """The browser session's folder and cancel flag, made on its first request."""
        with self._lock:
            if key not in self.sessions:
                folder = self.root / "sessions" / key
                folder.mkdir(parents=True, exist_ok=True)
                self.sessions[key] = Session(folder)
            return self.sessions[key]

    def close(self, key: str) -> None:
        """The page was closed: its files go."""
        with self._lock:
            session = self.sessions.pop(key, None)
        if session is not None:
            session.cancel.set()
            shutil.rmtree(session.folder, ignore_errors=True)

    def remix(self, key: str, song: str | None, values: dict[str, Any], report) -> dict[str, Any]:
        """Run one request; `report(fraction, text)` gets the stage and the generation percentage. Returns what
        the page shows; a RemixerError's message (never a traceback) comes back as `error`."""
        session = self.session(key)
        session.cancel.clear()
        session.requests += 1
        output_dir = session.folder / f"remix-{session.requests}"
        # The previous remix of this session is replaced: its files would only fill the disk.
        for old in session.folder.glob("remix-*"):
            shutil.rmtree(old, ignore_errors=True)
        stages = _StageLog(report)
        log.addHandler(stages)
        try:
            if not song:
                raise RemixerError("no song: drop an audio file on the page first")
            values = {**values, "music_input": song}
            if (values.get("takes") or 1) > 1:
                values["return_takes"] = True  # the page plays every take
            request = RemixRequest.from_inputs(**values)

            def progress(done: int, total: int) -> None:
                if session.cancel.is_set():
                    raise Cancelled("cancelled: the remix was stopped")
                report(done / max(total, 1), f"generating: {100 * done // max(total, 1)}%")

            with self._running:
                result = self.remixer.remix(request, output_dir, progress=progress)
        except RemixerError as error:
            shutil.rmtree(output_dir, ignore_errors=True)
            return {"error": str(error)}
        except Exception as error:  # noqa: BLE001 - a bug: said in one line here, the traceback in the log
            log.exception("the app's request failed")
            shutil.rmtree(output_dir, ignore_errors=True)
            return {"error": f"internal error ({type(error).__name__}: {error}); the app's log has the details"}
        finally:
            log.removeHandler(stages)
        return {"error": None, "result": result}


class _StageLog(logging.Handler):
    """The pipeline's one line per stage, passed on as the progress bar's text."""

    def __init__(self, report):
        super().__init__(logging.INFO)
        self.report = report

    def emit(self, record: logging.LogRecord) -> None:
        """A stage line becomes the progress bar's text."""
        try:
            self.report(None, record.getMessage().split(":")[0].strip())
        except Exception:  # noqa: BLE001 - a progress display never fails a request
            pass


def component_for(spec: InputSpec):
    """The Gradio input for one row of the input table: its name, help text, range and default."""
    import gradio as gr

    default = page_default(spec)
    common = dict(label=spec.name, info=spec.description, elem_id=f"input-{spec.name}")
    if spec.name == "keep":  # a list of the song's parts: one check box each
        return gr.CheckboxGroup(choices=list(KEEPABLE), value=list(kept_parts(default)), **common)
    if spec.type is bool:
        return gr.Checkbox(value=default, **common)
    if spec.choices:
        return gr.Dropdown(choices=list(spec.choices), value=default, **common)
    if spec.type in (int, float) and spec.ge is not None and spec.le is not None:
        return gr.Slider(minimum=spec.ge, maximum=spec.le, value=default, step=1 if spec.type is int else 0.05,
                         **common)
    if spec.type in (int, float):
        # A number box cannot be empty (it shows 0, a real value); -1 is "unset", as for the Cog API.
        return gr.Number(value=UNSET if default is None else default, precision=0 if spec.type is int else None,
                         **common)
    return gr.Textbox(value=default or "", lines=1, **common)


def page_default(spec: InputSpec):
    """What the page shows first for an input: the page's own default, else the table's."""
    return PAGE_DEFAULTS.get(spec.name, spec.default)


def build(app: App):
    """The page."""
    import gradio as gr

    advanced_specs = [spec for spec in INPUTS if spec.name not in MAIN_INPUTS]
    # Gradio's own copies of uploads and outputs older than an hour are deleted hourly.
    with gr.Blocks(title="MusicGen Remixer", delete_cache=(3600, 3600)) as page:
        gr.Markdown("# MusicGen Remixer\nYour song, its vocals, chords and bars, played by a new band.")
        with gr.Row():
            with gr.Column():
                song = gr.File(label="Song (drop an audio file: wav, flac, ogg, opus, mp3, m4a/aac, aiff)",
                               type="filepath", elem_id="song")
                prompt = gr.Textbox(label="prompt", info=SPECS["prompt"].description, lines=2,
                                    elem_id="input-prompt")
                gr.Examples(STYLE_EXAMPLES, inputs=[prompt], label="Styles")
                model_version = component_for(SPECS["model_version"])
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    advanced = [component_for(spec) for spec in advanced_specs]
                with gr.Row():
                    go = gr.Button("Remix", variant="primary", elem_id="remix")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column():
                status = gr.Markdown("", elem_id="status")
                original = gr.Audio(label="Original", interactive=False, elem_id="original")
                remixed = gr.Audio(label="Remix", interactive=False, elem_id="remix-player")
                takes_table = gr.Markdown("", elem_id="takes")
                take_players = [gr.Audio(label=f"Take {n}", interactive=False, visible=False, elem_id=f"take-{n}")
                                for n in range(1, MAX_TAKE_PLAYERS + 1)]
                with gr.Accordion("Stems", open=False):
                    stem_players = [gr.Audio(label=name, interactive=False, visible=False, elem_id=f"stem-{name}")
                                    for name in STEMS]
                picture = gr.Image(label="The song", type="filepath", interactive=False, elem_id="picture")
                files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")

        song.change(lambda path: path, inputs=song, outputs=original)
        names = [spec.name for spec in advanced_specs]
        outputs = [status, remixed, takes_table, *take_players, *stem_players, picture, files]

        # Gradio passes its special arguments (the session, the progress bar) only as leading positional ones.
        def run(request, progress=gr.Progress(), *shown):
            path, prompt_text, version, *rest = shown
            values = {"prompt": prompt_text, "model_version": version, **_clean(dict(zip(names, rest)))}
            done = app.remix(_key(request), path, values, lambda fraction, text: progress(fraction, desc=text))
            return _shown(done, len(take_players), len(stem_players))

        def cancel(request):
            app.session(_key(request)).cancel.set()

        def closed(request):
            app.close(_key(request))

        # Gradio hands the session to parameters annotated with its Request class (the class itself: this
        # module's annotations are strings).
        for handler in (run, cancel, closed):
            handler.__annotations__["request"] = gr.Request
        event = go.click(run, inputs=[song, prompt, model_version, *advanced], outputs=outputs,
                         concurrency_limit=1)
        stop.click(cancel, inputs=None, outputs=None, cancels=[event])
        page.unload(closed)
    return page


def _key(request) -> str:
    return getattr(request, "session_hash", None) or "default"


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """Gradio's values -> the request's: an empty box is unset, whole numbers from sliders are ints."""
    clean = {}
    for name, value in values.items():
        spec = SPECS[name]
        if name == "keep" and isinstance(value, (list, tuple)):  # the check boxes: a list of parts
            value = ",".join(value) or None
        if value in ("", None):
            value = None
        elif spec.type is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        clean[name] = value
    return clean


def _shown(done: dict, take_slots: int, stem_slots: int) -> list:
    """What each output component shows for one finished (or failed) request."""
    import gradio as gr

    if done["error"] is not None:
        hidden = [gr.update(value=None, visible=False)] * (take_slots + stem_slots)
        return [f"**Could not remix:** {done['error']}", None, "", *hidden, None, None]
    result = done["result"]
    takes = [gr.update(value=None, visible=False)] * take_slots
    lines = []
    if len(result.takes) > 1:
        paths = {1: result.remix, **{int(n[4:]): p for n, p in result.take_outputs.items()}}
        lines = ["| take | rank | score | chords (majmin) | chords (tetrads) | beats (F) |", "|---|---|---|---|---|---|"]
        for slot, take in enumerate(result.takes):
            f = take.fidelity
            chosen = " (chosen)" if take.rank == 1 else ""
            lines.append(f"| {take.index}{chosen} | {take.rank} | {f.score:.2f} | {_number(f.chord_majmin)} "
                         f"| {_number(f.chord_tetrads)} | {_number(f.beat_f)} |")
            if take.rank in paths and slot < take_slots:
                label = f"Take {take.index}, rank {take.rank}{chosen}: score {f.score:.2f}"
                takes[slot] = gr.update(value=str(paths[take.rank]), label=label, visible=True)
    # A slot shows the part the remix holds: the new band's, or the song's own where it was kept.
    held = {name.removeprefix("song_"): (path, name) for name, path in result.stems.items()}
    stems = [gr.update(value=str(held[name][0]), label=held[name][1].replace("_", " "), visible=True)
             if name in held else gr.update(value=None, visible=False) for name in STEMS][:stem_slots]
    fidelity = ""
    if result.fidelity is not None:
        why = f" (n/a: {result.fidelity.unmeasured})" if result.fidelity.unmeasured else ""
        fidelity = f" Fidelity: {result.fidelity.summary()}{why}."
    status = f"Done in {sum(result.timings.values()):.1f} s, seed {result.seed}.{fidelity}"
    picture = str(result.analysis_png) if result.analysis_png else None
    files = [str(path) for path in result.outputs]
    return [status, str(result.remix), "\n".join(lines), *takes, *stems, picture, files]


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicgen-remix app", description="Remix from the browser.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0: every interface, without authentication)")
    parser.add_argument("--port", type=int, default=7860)
    add_setup_flags(parser)
    return parser


def main(argv: list[str]) -> int:
    """`musicgen-remix app`: set up once, serve the page until Ctrl-C or SIGTERM; 0, or 1 when setup fails."""
    args = _parser().parse_args(argv)
    setup_logging()
    if not use_mirror(args):
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"musicgen-remix app: warning: {WARN_OPEN.format(host=args.host)}", file=sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="remixer-app-"))
    print(f"musicgen-remix app: uploads and outputs in {root} (removed when the app stops)", file=sys.stderr)
    # A stop by SIGTERM (a service manager, a container) unwinds like Ctrl-C, so the folder is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Gradio's uploads and cached outputs live in the app's folder too, so that stopping removes them.
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline machine
    try:
        from remixer.pipeline import Remixer

        try:
            remixer = Remixer(args.weights_dir, args.device, offline=args.offline or None)
        except RemixerError as error:
            print(f"musicgen-remix app: {error}", file=sys.stderr)
            return 1
        remixer.log_setup()
        page = build(App(remixer, root))
        page.queue(default_concurrency_limit=1)
        page.launch(server_name=args.host, server_port=args.port, allowed_paths=[str(root)], show_error=False,
                    share=False, prevent_thread_lock=False)
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
