"""The prediction inputs (the published musicgen-remixer predictor's, plus ours): one table for the Cog schema,
the CLI and the Python API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remixer.audio import FORMATS, STRATEGIES
from remixer.chords import COEFFICIENT_RANGE
from remixer.errors import RemixerError
from remixer.mix import BALANCES
from remixer.musicgen import MODEL_VERSIONS, Sampling
from remixer.rhythm import TRACKERS

KEEPABLE = ("drums", "bass", "other")  # demucs' stems besides the vocals (always kept)
OUTPUT_RATES = ("song", "32000", "44100", "48000")

_SAMPLING = Sampling()  # the sampling defaults' one home

MAX_TAKES = 4
TRANSPOSE_RANGE = (-12, 12)  # semitones
TEMPO_RANGE = (0.7, 1.4)  # new tempo / the song's (checked against the song's tempo by remixer.keytempo)
EMPTY_PROMPT = "prompt is empty: describe the style, e.g. 'bossa nova with nylon guitar'"
MIN_SECTION_S = 5.0  # the shortest part of a song that start_time/end_time may pick
STEREO_VERSIONS = tuple(v for v in MODEL_VERSIONS if v.startswith("stereo"))
UNSET = -1  # what clients send for "not set" on beat_sync_threshold and seed


class RequestError(RemixerError):
    """Invalid inputs; the message lists every problem and what is accepted (`problems`: one each)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: type
    default: Any
    description: str
    choices: tuple | None = None
    ge: float | None = None
    le: float | None = None
    optional: bool = False  # may be left unset (None)
    required: bool = False


INPUTS: tuple[InputSpec, ...] = (
    InputSpec("model_version", str, "stereo-chord",
              "MusicGen-Chord model. Stereo models give stereo output; large models are slower "
              "(stereo-chord and chord are 1.5 B parameters, the large ones 3.3 B). musicongen (MusiConGen, "
              "mono, 1.5 B) plays on the song's own beats and chords, for a song whose beat is found.",
              choices=MODEL_VERSIONS),
    InputSpec("prompt", str, None, "The style to remix the song in, e.g. 'bossa nova with nylon guitar'.",
              required=True),
    InputSpec("music_input", Path, None,
              "The song to remix: wav, flac, ogg, opus, mp3, m4a/aac or aiff (10 minutes at most). "
              "Its vocals, chords and bars are kept.", required=True),
    InputSpec("multi_band_diffusion", bool, False,
              "Decode with Multi-Band Diffusion for cleaner audio (slower). Mono models only."),
    InputSpec("normalization_strategy", str, "loudness",
              "How the output level is set: loudness (-14 LUFS), clip, peak (-1 dBFS) or rms (-18 dBFS).",
              choices=STRATEGIES),
    InputSpec("beat_sync_threshold", float, None,
              "Largest gap in seconds between a generated and a song downbeat for them to count as the same "
              "bar. Leave unset for 1.1 beats at the song's tempo (0.75 s when no tempo is found).",
              optional=True),
    InputSpec("large_chord_voca", bool, True,
              "Recognise 7ths, diminished, augmented and suspended chords (170 classes) instead of major/minor "
              "only (25 classes)."),
    InputSpec("chroma_coefficient", float, 1.0, "How strongly the song's chords steer the new music (the chord "
              "models' chroma; musicongen hears the chords as it was trained to).",
              ge=COEFFICIENT_RANGE[0], le=COEFFICIENT_RANGE[1]),
    InputSpec("top_k", int, _SAMPLING.top_k, "Sample from the k most likely tokens (0: no limit).", ge=0),
    InputSpec("top_p", float, _SAMPLING.top_p, "Nucleus sampling: sample from the most likely tokens covering "
              "this probability; 0 uses top_k instead.", ge=0.0, le=1.0),
    InputSpec("temperature", float, _SAMPLING.temperature,
              "Sampling temperature (> 0); higher is more adventurous.", ge=0.0),
    InputSpec("classifier_free_guidance", int, int(_SAMPLING.classifier_free_guidance),
              "How closely to follow the prompt and chords (audiocraft's cfg_coef): 1 follows them as the model "
              "learned, higher follows them more closely and varies less, 0 ignores them (the unconditional "
              "model).", ge=0),
    InputSpec("output_format", str, "wav", "Output file format: wav (16-bit) or mp3 (320 kbps).",
              choices=FORMATS),
    InputSpec("return_instrumental", bool, False, "Also return the new instrumental without vocals."),
    InputSpec("seed", int, None, "Random seed; leave unset (or -1) for a random one, which is reported in "
              "the logs so the result can be reproduced.", optional=True),
    InputSpec("return_analysis", bool, False,
              "Also return analysis.json (tempo, meter, beats, bars, sections, chords, the prompt as sent, "
              "seed, timings; times in seconds on the song's timeline) and analysis.png (the song with its "
              "sections, bars and chords)."),
    InputSpec("return_stems", bool, False,
              "Also return the new band's drums, bass and other parts (beat-synced like the remix, same length; "
              "they add up to the instrumental) and the song's vocals as mixed in."),
    InputSpec("start_time", float, None,
              "Remix only the part of the song from here (seconds; unset or -1: its start). The part is "
              "analysed on its own; reported times are on the song's timeline.", optional=True),
    InputSpec("end_time", float, None,
              "Remix only the part of the song up to here (seconds; unset or -1: its end). A part is at least "
              f"{MIN_SECTION_S:g} s long; 30 s or less costs one generation window.", optional=True),
    InputSpec("chords", str, None,
              "The song's chords, one per bar, e.g. 'C G Am F' or 'C G A:min F7': laid on the song's bars in "
              "order and repeated to the end, instead of recognising them. Leave empty to recognise them.",
              optional=True),
    InputSpec("takes", int, 1,
              f"How many versions to make, decoded together (1 to {MAX_TAKES}; on a GPU several cost little more "
              "than one). The remix returned is the take that plays the song's chords and beats most "
              "faithfully (see analysis.json's takes).", ge=1, le=MAX_TAKES),
    InputSpec("return_takes", bool, False,
              "Also return the other takes' remixes (take2 ... takeN, best first) after the other outputs."),
    InputSpec("transpose", int, 0,
              f"Semitones to move the song's key by ({TRANSPOSE_RANGE[0]} to {TRANSPOSE_RANGE[1]}): the chords are "
              "transposed and the vocals pitch-shifted with their formants kept.",
              ge=TRANSPOSE_RANGE[0], le=TRANSPOSE_RANGE[1]),
    InputSpec("beat_tracker", str, TRACKERS[0],
              "What finds the song's beats and bars: all-in-one (the original's; also finds sections) or madmom "
              "(madmom's downbeat tracker on the whole mix: beats, bars, 3/4 or 4/4, no sections; several times "
              "faster on a CPU).", choices=TRACKERS),
    InputSpec("return_midi", bool, False,
              "Also return song.mid: a standard MIDI file with the song's tempo map from its detected beats (a "
              "DAW's bar lines land on its bars, meter included), its chords as played notes and its sections as "
              "markers, on the remix's timeline (after tempo and transpose)."),
    InputSpec("keep", str, None,
              "The song's own parts to keep under the new band, in place of its parts: any of drums, bass, other "
              "(e.g. 'drums,bass'); the vocals are always kept. Unset: a whole new band.", optional=True),
    InputSpec("output_sample_rate", str, OUTPUT_RATES[0],
              "The outputs' sample rate: song (the upload's own, 32 to 48 kHz, so its vocals and kept parts keep "
              "their full bandwidth) or 32000 (MusicGen's own rate, what the published predictor returned), "
              "44100, 48000.", choices=OUTPUT_RATES),
    InputSpec("tempo", float, None,
              f"New tempo in bpm ({TEMPO_RANGE[0]:g}x to {TEMPO_RANGE[1]:g}x the song's detected tempo; unset or -1: "
              "the song's): the whole song is scaled to it, vocals time-stretched with their pitch kept.",
              optional=True),
    InputSpec("mix_balance", str, BALANCES[0],
              "How the song's vocals sit against the new band: song (the song's own balance: its vocals and kept "
              "parts at their own levels, the new band as loud as the parts it replaces, following their quiet "
              "and loud bars) or published (the published predictor's mix: the band peak-scaled to half scale, "
              "the vocals to a quarter, one level throughout).", choices=BALANCES),
)

SPECS = {spec.name: spec for spec in INPUTS}


def kept_parts(keep: str | None) -> tuple[str, ...]:
    """keep's parts in the stems' order ('bass, drums' -> ('drums', 'bass')); () when unset."""
    named = set((keep or "").replace(",", " ").split())
    return tuple(part for part in KEEPABLE if part in named)


def keep_problems(keep: str) -> list[str]:
    """What is wrong with a keep value, with what is accepted."""
    named = (keep or "").replace(",", " ").split()
    unknown = sorted(set(named) - set(KEEPABLE))
    if unknown:
        return [f"keep names the song's parts to keep: any of {', '.join(KEEPABLE)} (e.g. 'drums,bass'); "
                f"{', '.join(map(repr, unknown))} is not one"]
    if set(named) == set(KEEPABLE):
        return [f"keep cannot keep all of {', '.join(KEEPABLE)}: nothing would be new (the remix would be the "
                "song itself); keep one or two"]
    return []


@dataclass(frozen=True)
class RemixRequest:
    """Exactly the prediction inputs, with the published defaults. A RemixRequest that exists is valid: it is
    checked once, when made (RequestError lists every problem), and the stages trust it. What depends on the
    song itself (the part's bounds, the tempo against the song's own) is checked where the song is known."""

    prompt: str
    music_input: Path
    model_version: str = "stereo-chord"
    multi_band_diffusion: bool = False
    normalization_strategy: str = "loudness"
    beat_sync_threshold: float | None = None
    large_chord_voca: bool = True
    chroma_coefficient: float = 1.0
    top_k: int = _SAMPLING.top_k
    top_p: float = _SAMPLING.top_p
    temperature: float = _SAMPLING.temperature
    classifier_free_guidance: int = int(_SAMPLING.classifier_free_guidance)
    output_format: str = "wav"
    return_instrumental: bool = False
    seed: int | None = None
    return_analysis: bool = False
    return_stems: bool = False
    start_time: float | None = None
    end_time: float | None = None
    chords: str | None = None
    takes: int = 1
    return_takes: bool = False
    transpose: int = 0
    beat_tracker: str = TRACKERS[0]
    return_midi: bool = False
    keep: str | None = None
    output_sample_rate: str = OUTPUT_RATES[0]
    tempo: float | None = None
    mix_balance: str = BALANCES[0]

    def __post_init__(self):
        problems = self._problems()
        if problems:
            raise RequestError("; ".join(problems), problems)

    @classmethod
    def from_inputs(cls, **values) -> "RemixRequest":
        """Build from loosely typed inputs (HTTP, CLI, in-process calls) and validate."""
        request, problems = cls.check(values)
        if problems:
            raise RequestError("; ".join(problems))
        return request

    @classmethod
    def check(cls, values: dict[str, Any]) -> tuple["RemixRequest | None", list[str]]:
        """The request and every problem with `values` (none when the request is valid)."""
        unknown = sorted(set(values) - set(SPECS))
        if unknown:
            return None, [f"unknown input(s) {unknown}; accepted: {', '.join(SPECS)}"]
        problems = []
        clean: dict[str, Any] = {}
        for name, value in values.items():
            try:
                clean[name] = _coerce(SPECS[name], value)
            except (TypeError, ValueError):
                problems.append(f"{name}: {value!r} is not a {SPECS[name].type.__name__}")
        missing = [spec.name for spec in INPUTS if spec.required and clean.get(spec.name) in (None, "")]
        problems += [f"{name} is required" for name in missing]
        if problems:
            return None, problems
        try:
            return cls(**clean), []
        except RequestError as error:
            return None, error.problems

    def _problems(self) -> list[str]:
        """Everything wrong with these inputs, each with what is accepted."""
        problems = []
        for spec in INPUTS:
            value = getattr(self, spec.name)
            if value is None:
                continue
            if spec.choices and value not in spec.choices:
                problems.append(f"{spec.name} must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
            if spec.ge is not None and value < spec.ge:
                problems.append(f"{spec.name} must be >= {spec.ge}, got {value}")
            if spec.le is not None and value > spec.le:
                problems.append(f"{spec.name} must be <= {spec.le}, got {value}")
        if not self.prompt.strip():
            problems.append(EMPTY_PROMPT)
        if self.temperature <= 0:
            problems.append(f"temperature must be > 0, got {self.temperature}")
        if self.beat_sync_threshold is not None and self.beat_sync_threshold <= 0:
            problems.append(f"beat_sync_threshold must be > 0 seconds (or unset), got {self.beat_sync_threshold}")
        if self.tempo is not None and not self.tempo > 0:
            problems.append(f"tempo must be a positive bpm ({TEMPO_RANGE[0]:g}x to {TEMPO_RANGE[1]:g}x the song's), "
                            f"or unset / -1 for the song's own; got {self.tempo:g}")
        if self.seed is not None and self.seed < 0:
            problems.append(f"seed must be >= 0 (or unset / -1 for random), got {self.seed}")
        if self.multi_band_diffusion and self.model_version in STEREO_VERSIONS:
            problems.append(f"multi_band_diffusion works with the mono models (chord, chord-large) only, "
                            f"not {self.model_version}")
        for name in ("start_time", "end_time"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must be >= 0 seconds (or unset / -1), got {value}")
        if self.start_time is not None and self.end_time is not None \
                and self.end_time - self.start_time < MIN_SECTION_S:
            problems.append(f"end_time must be at least {MIN_SECTION_S:g} s after start_time, got "
                            f"{self.start_time:g} .. {self.end_time:g}")
        if self.keep is not None:
            problems += keep_problems(self.keep)
        if self.chords is not None:
            from remixer.chords import ChordError, parse_progression

            try:
                parse_progression(self.chords)
            except ChordError as error:
                problems.append(f"chords: {error}")
        if not Path(self.music_input).is_file():
            problems.append(f"music_input: no such file {Path(self.music_input).name!r}")
        return problems


def _coerce(spec: InputSpec, value: Any) -> Any:
    if value is None:
        # Left out (None) in the Python API or a manifest: the default, as the Cog schema gives it.
        return None if spec.optional or spec.required else spec.default
    if spec.optional and spec.type is str and not str(value).strip():
        return None
    if spec.optional and spec.type in (int, float) and _is_unset(value):
        return None
    if spec.type is Path:
        return Path(str(value))
    if spec.type is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(value)
            return lowered in {"true", "1", "yes"}
        return bool(value)
    if spec.type is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return spec.type(value)


def _is_unset(value: Any) -> bool:
    """-1 (what clients send for "not set"), also as text from a form, a CSV cell or a command line."""
    try:
        return float(value) == UNSET
    except (TypeError, ValueError):
        return False
