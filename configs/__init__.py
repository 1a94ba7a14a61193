"""Typed configuration: YAML profiles in this folder, loaded into dataclasses.

Every section is a dataclass; unknown keys and values of the wrong type are errors that name the
key's full path (``temporal.d_state``), so a typo in a profile never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A profile that does not match the schema; the message names the offending key."""


@dataclass
class VisionConfig:
    """A SigLIP-style vision tower. `pretrained` is a local path for `from_pretrained`; else built from these sizes."""
    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    pool: int = 2  # spatial average pooling factor (STORM: 2x2); 1 turns it off
    pretrained: str | None = None
    frozen: bool = False

    def __post_init__(self):
        _positive(self, "image_size", "patch_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "pool")
        if self.pretrained is None:
            if self.image_size % self.patch_size:
                raise ConfigError(f"vision.image_size ({self.image_size}) must be a multiple of vision.patch_size ({self.patch_size})")
            if (self.image_size // self.patch_size) % self.pool:
                raise ConfigError(f"vision.pool ({self.pool}) must divide the patch grid ({self.image_size // self.patch_size})")


@dataclass
class TemporalConfig:
    """Residual pre-norm Mamba blocks along time; names as mamba-ssm's `Mamba`."""
    n_layers: int = 2
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    use_cuda_kernels: bool = True  # mamba-ssm's kernels when CUDA and mamba-ssm are present
    # A new stream's scan starts from the state after its first frame held this many frames (0: from zeros).
    # Training clips start after seconds of history; a stream's first cube, scanned from zeros, was unlike
    # any the LLM read, and the pointer picked it (t=0s) for 8 of 31 wrong "when" answers of test worlds.
    prime_frames: int = 60

    def __post_init__(self):
        _positive(self, "n_layers", "d_state", "d_conv", "expand")
        if self.prime_frames < 0:
            raise ConfigError(f"temporal.prime_frames must be >= 0, got {self.prime_frames!r}")


@dataclass
class CubingConfig:
    """Online Gumbel cubing (Quicksviewer's momentum rule made causal)."""
    min_len: int = 2
    max_len: int = 16
    target_len: float = 5.0  # the boundary prior, one a this many frames; a run-time setting (shifts the boundary
    #   logit). The cubes' realised mean is longer where the head is sure nothing happened; min/max_len clip it
    trained_target_len: float = 5.0  # the mean the boundary head was trained to hold
    # A cube the head opened (at an event) closes by this many frames; None: max_len. Quiet stretches then
    # cost few long cubes while the frames after an event keep short ones: the density shift, both ways.
    event_max_len: int | None = None
    momentum: float = 0.8
    tau: float = 0.5

    def __post_init__(self):
        _positive(self, "min_len", "max_len", "target_len", "trained_target_len", "tau")
        if self.min_len > self.max_len:
            raise ConfigError(f"cubing.min_len ({self.min_len}) must not exceed cubing.max_len ({self.max_len})")
        if self.event_max_len is not None and not self.min_len <= self.event_max_len <= self.max_len:
            raise ConfigError(f"cubing.event_max_len ({self.event_max_len}) must lie in [min_len, max_len] "
                              f"([{self.min_len}, {self.max_len}])")
        for name in ("target_len", "trained_target_len"):  # a prior of one boundary a frame or more has no logit
            if not 1.0 < getattr(self, name) <= self.max_len:
                raise ConfigError(f"cubing.{name} ({getattr(self, name)}) must lie in (1, max_len]")
        if not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"cubing.momentum ({self.momentum}) must lie in [0, 1]")


@dataclass
class ResamplerConfig:
    num_queries: int = 4  # K tokens per cube (Quicksviewer: 64 for a 7B LLM)
    num_heads: int = 4
    out_dim: int = 128  # the LLM's width

    def __post_init__(self):
        _positive(self, "num_queries", "num_heads", "out_dim")


@dataclass
class LLMConfig:
    """A Hugging Face causal LM fed `inputs_embeds`: tiny and built here by default, or a local checkpoint."""
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    max_positions: int = 2048
    pretrained: str | None = None  # local path of a causal LM and its tokenizer (e.g. Qwen2.5)
    frozen: bool = False
    readers: str | None = None  # a plug-in reading the whole memory, "package.module:Class" (models/readers.py)

    def __post_init__(self):
        _positive(self, "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions")
        if self.readers is not None and not re.fullmatch(r"[\w.]+:\w+", self.readers):
            raise ConfigError(f"llm.readers must name a class as 'package.module:Class', got {self.readers!r}")


@dataclass
class ModelConfig:
    """A pretrained Hugging Face VLM in place of the trained tiny model (models/vlm/): its vision side runs on
    the encoder actors, its language side on the LLM actors; cubes are cut and pooled without training."""
    vlm: str | None = None  # a Hugging Face model id or a local folder; None: the profile's trained model
    dtype: str = "auto"  # "auto" (bfloat16 on CUDA, float32 on CPU), "float32", "bfloat16", "float16"
    device: str = "auto"  # "auto" (CUDA where the actor was given a GPU), "cpu", "cuda", "cuda:1", ...
    max_pixels: int | None = None  # per frame, for Qwen2.5-VL's image processor; None: the model's own setting
    cube_grid: list[int] = field(default_factory=lambda: [2, 4, 4])  # a cube's (time, height, width) tokens
    #   after pooling: K = their product; every cube of every stream has this many
    min_frames: int = 2  # a cube holds at least this many frames ...
    max_frames: int = 16  # ... and at most this many (8 s at 2 fps)
    temporal_layers: int = 0  # Mamba blocks over the pooled frames before cubing, the identity until trained
    boundaries: str = "change"  # where cubes end: "change" (the training-free rule) or "head" (the Gumbel head of
    #   `cubing:`, trained by stage 1: the profile's `stage1:` checkpoint must hold it)
    resampler: str = "pool"  # a closed cube's tokens: "pool" (averaged to cube_grid, no parameters) or "attention"
    #   (Quicksviewer's resampler over the pooling, models/vlm/resampler.py: the pooling until stage 1 trains it)

    def __post_init__(self):
        if self.vlm is not None and not self.vlm.strip():
            raise ConfigError("model.vlm must be a model id or a path, or null")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"model.dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"model.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.max_pixels is not None and self.max_pixels <= 0:
            raise ConfigError(f"model.max_pixels must be positive or null, got {self.max_pixels!r}")
        if len(self.cube_grid) != 3 or any(k <= 0 for k in self.cube_grid):
            raise ConfigError(f"model.cube_grid must be three positive ints (time, height, width), got {self.cube_grid!r}")
        _positive(self, "min_frames", "max_frames")
        if self.min_frames > self.max_frames:
            raise ConfigError(f"model.min_frames ({self.min_frames}) must not exceed model.max_frames ({self.max_frames})")
        if self.temporal_layers < 0:
            raise ConfigError(f"model.temporal_layers must be >= 0, got {self.temporal_layers!r}")
        if self.boundaries not in ("change", "head"):
            raise ConfigError(f"model.boundaries must be 'change' or 'head', got {self.boundaries!r}")
        if self.resampler not in ("pool", "attention"):
            raise ConfigError(f"model.resampler must be 'pool' or 'attention', got {self.resampler!r}")


@dataclass
class AnswerConfig:
    """Question-conditioned selection (XComp) and decoding limits."""
    context_tokens: int = 192  # LLM tokens the selected cubes may take (K tokens + timestamp each): about a training clip
    newest_cubes: int = 2  # always in the prompt: a question is most often about now
    window_cubes: int = 48  # XComp's local windows: cubes scored together in one pass
    max_question_tokens: int = 48
    max_answer_tokens: int = 12
    max_options: int = 32  # a multiple-choice question's options (each at most max_answer_tokens long)
    citations: int = 3  # cited time spans: the highest-scoring selected cubes
    selection: str = "attention"  # "attention" (XComp), "pointer" (the trained CubePointer's logits, by window),
    #   "key" (cosine of cube keys to the question), "recent" (none)
    locator: bool = True  # a time the LLM answers is located in the whole memory by llm.readers, where fitted
    reader: bool = True  # the questions llm.readers reads are answered by it from the whole memory, where fitted

    def __post_init__(self):
        _positive(self, "context_tokens", "newest_cubes", "window_cubes", "max_question_tokens", "max_answer_tokens",
                  "max_options", "citations")
        if self.selection not in ("attention", "key", "recent", "pointer"):
            raise ConfigError(f"answer.selection must be 'attention', 'pointer', 'key' or 'recent', got {self.selection!r}")


TRAINABLE_PARTS = ("vision", "temporal", "cubing", "resampler", "llm")


@dataclass
class TrainConfig:
    """`cubestream train` on the synthetic world (stream/synth.py)."""
    # The step count sets the schedule (lr cosine, Gumbel noise annealing); on 2 CPU cores a run from scratch
    # takes ~7-9 s a step until the boundary head holds its trained cube rate (~100-150 steps), then ~3.3 s:
    # 900 steps take the hour (one was cut at 860, the lr then under 1% of its peak). 1800 did not fit the 40
    # min it had: cut at a third of it, the Gumbel noise still 0.43.
    steps: int = 900
    max_minutes: float = 60.0  # stop (and save) when this much wall time has passed; --resume finishes the schedule
    clips_per_step: int = 4
    questions_per_clip: int = 6
    absent_prompts: int = 3  # per clip: windows of cubes without a question's answer, where the pointer learns "none"
    when_prompts: int = 4  # per clip: the whole clip and a "when" question about one of its events, for the pointer alone
    clip_seconds: float = 48.0
    lr: float = 1e-3
    weight_decay: float = 0.01
    noise_anneal: float = 0.6  # Gumbel noise weight goes 1.0 -> 0.01 (cosine) over this fraction of the steps
    rate_weight: float = 0.1  # holds the mean cube length near cubing.trained_target_len
    boundary_weight: float = 1.0  # supervised boundary term from the world's event log (0 = Quicksviewer's unsupervised)
    attribute_weight: float = 1.0  # training-only probe: the (colour, shape) pairs a cube shows and the events begun in it
    region_weight: float = 1.0  # training-only probe: the object centred in each region of each frame
    event_object_weight: float = 1.0  # of the cube probe's events: which object entered or left (which colour a change turned to)
    train_seeds: int = 10_000  # worlds 0 .. train_seeds-1 train; evaluation uses seeds above
    world_seconds: float = 1800.0  # clips end anywhere in the first this many seconds of a world
    segments: int = 1  # a clip is 1 to this many separate stretches of frames (clip_seconds in all) ...
    history_seconds: float = 600.0  # ... spread over this many seconds before its end: prompts with gaps
    warmup_seconds: float = 30.0  # a clip's scan starts from the temporal state after this many seconds before it
    probe_fit_steps: int = 200  # --init from a checkpoint without its probes: fit fresh ones this many steps, model frozen
    eval_every: int = 150
    save_every: int = 150
    # Parts held fixed (any of TRAINABLE_PARTS), for fine-tunes that must not move the rest: e.g. the cubes
    # longer than any trained on, learnt by resampler and LLM with the boundary head (where cubes close) kept.
    freeze: list[str] = field(default_factory=list)

    def __post_init__(self):
        unknown = sorted(set(self.freeze) - set(TRAINABLE_PARTS))
        if unknown:
            raise ConfigError(f"train.freeze: unknown part(s) {', '.join(unknown)}; the parts are {', '.join(TRAINABLE_PARTS)}")
        for name in ("absent_prompts", "when_prompts", "warmup_seconds", "probe_fit_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        _positive(self, "steps", "max_minutes", "clips_per_step", "questions_per_clip", "clip_seconds", "lr",
                  "train_seeds", "world_seconds", "segments", "history_seconds", "eval_every", "save_every")
        if self.history_seconds < self.clip_seconds:
            raise ConfigError(f"train.history_seconds ({self.history_seconds}) must be at least train.clip_seconds ({self.clip_seconds})")


@dataclass
class SamplerConfig:
    fps: float = 2.0
    queue_size: int = 8
    # A sampled frame that waited longer than this for the encoder is dropped (counted) instead of delivered:
    # past capacity the encoder gets each stream's freshest frames, and frame-to-memory latency stays bounded.
    max_delay: float = 1.0

    def __post_init__(self):
        _positive(self, "fps", "queue_size", "max_delay")


# FFmpeg's hardware device types (av_hwdevice_get_type_name)
HW_DEVICE_TYPES = ("cuda", "vaapi", "qsv", "vdpau", "drm", "opencl", "vulkan", "videotoolbox", "d3d11va", "dxva2",
                   "d3d12va", "mediacodec", "amf")


@dataclass
class SourceConfig:
    """How live sources connect, notice a dead camera, and reconnect (stream/sources)."""
    rtsp_transport: str = "tcp"  # "tcp" (default: passes NAT and firewalls, no loss) or "udp"
    open_timeout: float = 5.0  # seconds to connect and read the stream's description
    read_timeout: float = 5.0  # seconds without data before a connection counts as lost
    backoff_initial: float = 0.5  # first reconnect delay; doubles per consecutive failure
    backoff_max: float = 30.0
    backoff_jitter: float = 0.3  # fraction of each delay drawn at random, so cameras that failed together don't retry together
    max_retries: int | None = None  # consecutive failed reconnects before "failed"; None retries forever
    decode_threads: int = 1  # FFmpeg threads per stream's decoder (0: FFmpeg picks); many streams share the cores anyway
    # A camera whose frames fall this many seconds behind real time (the decoder cannot keep up) is decoded at
    # its keyframes only until it has caught up; the frames skipped are counted (status.frames_skipped).
    max_lag: float = 1.0
    # Skip the in-loop deblocking filter of H.264/HEVC (FFmpeg's skip_loop_filter=all): about a fifth less
    # CPU per decoded frame. The frames differ from a full decode by small blocking artifacts (over 40 dB
    # PSNR on the ingest benchmark's clip, at full size and at the model's) that can build up between
    # keyframes; reduced to the model's input size they do not show. False decodes to the standard.
    skip_loop_filter: bool = True
    # A live camera's packets are decoded in bursts of up to this many seconds: a decoder that wakes for
    # each frame finds its caches cold and costs about a quarter more per frame. The frames wait as long
    # (frame-to-memory latency); 0 decodes each packet as it comes.
    decode_batch: float = 0.25
    # Hardware decoding through FFmpeg (PyAV's HWAccel): "cuda" (NVDEC), "vaapi", "qsv", ...; None decodes on
    # the CPU. A codec the device cannot decode falls back to the CPU; a device that cannot be opened fails
    # the source with an error that says so.
    hwaccel: str | None = None
    # A connected source with no decoded frame for this long is stalled (the frame watchdog): its session
    # ends with an error that says so and it reconnects, even while the connection itself stays alive
    # (an RTSP camera whose media stops while its RTCP reports go on).
    frame_timeout: float = 3.0

    def __post_init__(self):
        _positive(self, "open_timeout", "read_timeout", "backoff_initial", "backoff_max", "max_lag", "frame_timeout")
        if not 0.0 <= self.decode_batch <= self.max_lag / 2:
            raise ConfigError(f"source.decode_batch ({self.decode_batch}) must lie in [0, max_lag / 2]: a burst "
                              f"is read before it is decoded, so it counts towards the lag")
        if self.decode_threads < 0:
            raise ConfigError(f"source.decode_threads must be >= 0, got {self.decode_threads!r}")
        if self.hwaccel is not None and self.hwaccel not in HW_DEVICE_TYPES:
            raise ConfigError(f"source.hwaccel must be null or one of {', '.join(HW_DEVICE_TYPES)}, got {self.hwaccel!r}")
        if self.rtsp_transport not in ("tcp", "udp"):
            raise ConfigError(f"source.rtsp_transport must be 'tcp' or 'udp', got {self.rtsp_transport!r}")
        if not 0.0 <= self.backoff_jitter <= 1.0:
            raise ConfigError(f"source.backoff_jitter ({self.backoff_jitter}) must lie in [0, 1]")
        if self.max_retries is not None and self.max_retries < 0:
            raise ConfigError(f"source.max_retries must be >= 0 or null, got {self.max_retries!r}")


@dataclass
class IceServerConfig:
    urls: str  # "stun:host:port" or "turn:host:port"
    username: str | None = None
    credential: str | None = None


@dataclass
class WhipConfig:
    """WebRTC ingest over WHIP (RFC 9725)."""
    ice_servers: list[IceServerConfig] = field(default_factory=list)  # none by default: no public STUN server
    codecs: list[str] = field(default_factory=lambda: ["VP8", "H264"])
    max_offer_bytes: int = 65536  # a real offer is a few kB; anything far larger is refused with 413
    token: str | None = None  # bearer token publishers must present; None accepts any publisher

    def __post_init__(self):
        _positive(self, "max_offer_bytes")
        bad = sorted(set(self.codecs) - {"VP8", "H264"})
        if bad or not self.codecs:
            raise ConfigError(f"whip.codecs must be a non-empty subset of VP8, H264, got {self.codecs!r}")


@dataclass
class MemoryConfig:
    """A stream's rolling memory (stream/memory.py) and its durable files (stream/snapshot.py)."""
    token_budget: int = 2048  # tokens held per stream; over it, old neighbours merge into coarser entries
    thumbnail_size: int = 64  # longest side (px) of the JPEG kept per entry
    thumbnail_quality: int = 75
    max_thumbnail_bytes: int = 16384
    compact_every: int = 256  # cubes appended to the log between full snapshots
    fsync: bool = True  # fsync each log record: survives power loss, not only a crashed process

    def __post_init__(self):
        _positive(self, "token_budget", "thumbnail_size", "thumbnail_quality", "max_thumbnail_bytes", "compact_every")


@dataclass
class RuntimeConfig:
    """The Ray runtime (actors/): placement, recovery, snapshots."""
    snapshot_dir: str = "~/.cache/cubestream/snapshots"  # per-stream snapshots; shared storage on a cluster
    encoder_gpus: float = 0.0  # GPUs per encoder actor: > 0 places one encoder per GPU (needs GPU nodes)
    encoders: int = 1  # encoder actors when encoder_gpus is 0 (one per CPU slot)
    encoder_cpus: float = 1.0
    # LLM actors: processes of their own that answer questions and watches (a GPU each with llm_gpus); 0: each
    # encoder actor answers too, in its process: one model process less (~300 MB on the default profile), and a
    # question shares the encoder's cores (on one CPU machine it does anyway)
    llm_actors: int = 0
    llm_gpus: float = 0.0
    max_batch: int = 64  # frames (one per stream) the encoder runs in one batched pass
    ingest_workers: int = 1  # ingest processes beside each encoder, on its node; each decodes many streams on threads
    # Niceness added to the ingest workers' processes: past capacity the cores go first to the encoders, the
    # LLM, the controller and Ray, and the decoding falls behind instead (then sheds frames: source.max_lag),
    # so the encoder keeps its full rate and questions keep their latency however many cameras are added.
    ingest_nice: int = 5
    # Streams an ingest worker decodes at once (0: one per core of its node); the others wait their turn
    ingest_decoders: int = 0
    # Seconds an ingest worker holds a sampled frame for the frames of its other streams, to send them to the
    # encoder in one call and one batched pass (several times less CPU a frame than one by one)
    batch_wait: float = 0.1
    request_timeout: float = 30.0  # seconds any call across actors may take before the caller gives up
    health_interval: float = 1.0  # seconds between the controller's checks of its actors
    state_every: int = 1  # closed cubes between saves of a stream's encoder state (also saved at each compaction)

    def __post_init__(self):
        _positive(self, "encoders", "encoder_cpus", "max_batch", "ingest_workers", "request_timeout",
                  "health_interval", "state_every")
        if self.llm_actors < 0:
            raise ConfigError(f"runtime.llm_actors must be >= 0, got {self.llm_actors!r}")
        if self.llm_gpus > 0 and self.llm_actors == 0:
            raise ConfigError("runtime.llm_gpus needs runtime.llm_actors > 0 (with 0 the encoders answer, on their devices)")
        if self.encoder_gpus < 0 or self.llm_gpus < 0:
            raise ConfigError("runtime.encoder_gpus and runtime.llm_gpus must be >= 0")
        if self.ingest_decoders < 0:
            raise ConfigError(f"runtime.ingest_decoders must be >= 0, got {self.ingest_decoders!r}")
        if self.batch_wait < 0:
            raise ConfigError(f"runtime.batch_wait must be >= 0, got {self.batch_wait!r}")
        if not 0 <= self.ingest_nice <= 19:
            raise ConfigError(f"runtime.ingest_nice must lie in [0, 19], got {self.ingest_nice!r}")


@dataclass
class ServerConfig:
    """The HTTP gateway. The bearer token comes from here, else $CUBESTREAM_TOKEN, else one is generated."""
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    max_body_bytes: int = 65536
    max_question_chars: int = 1000
    body_timeout: float = 10.0  # seconds a request body may take to arrive in full (else 408)
    tls_cert: str | None = None  # PEM certificate (chain) and its key: HTTPS for the API and WHIP
    tls_key: str | None = None
    # Browser origins (scheme://host[:port]) that may call the API and publish over WHIP; none by default
    cors_origins: list[str] = field(default_factory=list)

    def __post_init__(self):
        _positive(self, "max_body_bytes", "max_question_chars", "body_timeout")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"server.port must lie in [0, 65535], got {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("server.tls_cert and server.tls_key go together: set both or neither")
        bad = [o for o in self.cors_origins if o == "*" or o.rstrip("/") != o or "://" not in o]
        if bad:
            raise ConfigError(f"server.cors_origins are origins such as https://app.example:8443 (no '*', no path), got {bad!r}")


@dataclass
class WebhookConfig:
    """A URL every event is POSTed to, its body signed with HMAC-SHA256 under `secret`."""
    url: str
    secret: str

    def __post_init__(self):
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"api.webhooks: url must be http:// or https://, got {self.url!r}")
        if not self.secret:
            raise ConfigError("api.webhooks: secret must not be empty")


@dataclass
class ApiConfig:
    """Watches, events, webhooks, search, roles and the stream registry (actors/watches.py, events.py, registry.py)."""
    state_dir: str | None = None  # the registry and the event log; None: `_state` in runtime.snapshot_dir
    admin_tokens: list[str] = field(default_factory=list)  # may add and remove streams and watches (server.token too)
    viewer_tokens: list[str] = field(default_factory=list)  # may read, ask, search and follow events
    webhooks: list[WebhookConfig] = field(default_factory=list)
    webhook_timeout: float = 5.0  # seconds one delivery may take before it counts as failed
    webhook_retries: int = 8  # further attempts after a failed delivery, each after a doubled delay
    webhook_backoff: float = 1.0  # the first retry's delay (s)
    webhook_backoff_max: float = 60.0
    webhook_queue: int = 1000  # events waiting per URL; beyond it the oldest is dropped (and counted)
    watch_poll: float = 1.0  # seconds between looks for newly closed cubes (each look reads the timeline of each watched stream)
    max_watches: int = 32  # per stream
    events_kept: int = 10000  # the newest events served by GET /events and SSE replay (all stay in the log file)
    search_limit: int = 100  # the most results GET /search returns

    def __post_init__(self):
        _positive(self, "webhook_timeout", "webhook_backoff", "webhook_backoff_max", "webhook_queue", "watch_poll",
                  "max_watches", "events_kept", "search_limit")
        if self.webhook_retries < 0:
            raise ConfigError(f"api.webhook_retries must be >= 0, got {self.webhook_retries}")
        if set(self.admin_tokens) & set(self.viewer_tokens) or "" in self.admin_tokens + self.viewer_tokens:
            raise ConfigError("api: a token must be non-empty and either an admin or a viewer token, not both")


@dataclass
class Config:
    seed: int = 0
    vision: VisionConfig = field(default_factory=VisionConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    cubing: CubingConfig = field(default_factory=CubingConfig)
    resampler: ResamplerConfig = field(default_factory=ResamplerConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: str | None = None  # trained weights: a folder, relative to configs/ or absolute
    stage1: str | None = None  # a stage-1 checkpoint folder (`cubestream train-stage1`): its streaming modules over the checkpoint's
    model: ModelConfig = field(default_factory=ModelConfig)  # model.vlm: a pretrained VLM instead
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    whip: WhipConfig = field(default_factory=WhipConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    api: ApiConfig = field(default_factory=ApiConfig)

    def __post_init__(self):
        if self.model.vlm is not None and self.answer.selection == "pointer":
            raise ConfigError("answer.selection 'pointer' is the trained model's; with model.vlm use "
                              "'attention', 'key' or 'recent'")

    def frame_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) a camera's width x height frames are reduced to before they leave the ingest
        process: what the encoder reads, no more (a 720p frame is 2.7 MB as RGB, a 64x64 one 12 kB). The
        trained model: its tower's square input (vision.image_size; a pretrained tower's own from its
        config.json). A VLM (model.vlm): the frame's own aspect within model.max_pixels, where its processor
        takes over; never enlarged."""
        if self.model.vlm:
            scale = min(1.0, math.sqrt(self.model.max_pixels / (width * height))) if self.model.max_pixels else 1.0
            return max(1, round(width * scale)), max(1, round(height * scale))
        size = self.vision.image_size
        if self.vision.pretrained:
            try:
                tower = json.loads((Path(self.vision.pretrained).expanduser() / "config.json").read_text())
                size = int(tower.get("vision_config", tower).get("image_size", size))
            except (OSError, ValueError, AttributeError, TypeError):
                pass  # unreadable here (another node's path): the encoder resizes whatever it gets
        return size, size


PROFILES = resources.files(__name__)


def load_config(name_or_path: str | Path = "default", overrides: dict | None = None) -> Config:
    """Load a profile by name (`default` -> configs/default.yaml) or by path, then apply nested overrides.
    A profile may start from another (`base: default`): its values are laid over the base's."""
    data = _profile_data(name_or_path, ())
    if overrides:
        data = _merge(data, overrides)
    return from_dict(Config, data)


def _profile_data(name_or_path: str | Path, seen: tuple[Path, ...]) -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = Path(str(PROFILES / f"{name_or_path}.yaml"))
    if not path.is_file():
        raise ConfigError(f"no config profile at {path}")
    if path.resolve() in seen:
        raise ConfigError(f"profile {path} is its own base")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"profile {path} must be a mapping")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"base in {path} must be a profile name or path, got {base!r}")
    if Path(base).suffix:  # a path: relative to the profile that names it
        base = path.parent / base
    return _merge(_profile_data(base, seen + (path.resolve(),)), data)


def from_dict(cls, data, prefix: str = ""):
    """Build dataclass `cls` from a mapping, checking every key and value type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(f"unknown config key{where}: {', '.join(prefix + '.' + k if prefix else k for k in unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from e


def _coerce(tp, value, key: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (typing.Any,)
        return origin(_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is typing.Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{key} must be {tp.__name__}, got {value!r}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value!r}")
    return value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def _positive(section, *names: str):
    label = type(section).__name__.removesuffix("Config").lower()
    for n in names:
        if getattr(section, n) <= 0:
            raise ConfigError(f"{label}.{n} must be positive, got {getattr(section, n)!r}")

