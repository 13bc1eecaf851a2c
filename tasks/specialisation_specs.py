"""The specialisations: one model family each, one queue each, with its own time limits.

Static facts only; the code that loads and runs the models lives in `mmq.workers`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecialisationSpec:
    """What the contract knows about a specialisation: its queue, default model and time limits."""

    name: str
    default_model: str
    soft_time_limit_s: int
    time_limit_s: int
    description: str
    # How its loader reads a checkpoint: "transformers", "diffusers" or "none" (what
    # `mmq models pull` fetches; the speech worker's faster-whisper backend reads "ctranslate2").
    weights: str = "transformers"

    @property
    def queue(self) -> str:
        return self.name

    @property
    def model_env_var(self) -> str:
        return f"MMQ_{self.name.upper()}_MODEL"


SPECIALISATIONS: dict[str, SpecialisationSpec] = {
    spec.name: spec
    for spec in (
        SpecialisationSpec(
            name="caption",
            default_model="Salesforce/blip-image-captioning-base",
            soft_time_limit_s=120,
            time_limit_s=180,
            description="Image captioning with BLIP.",
        ),
        SpecialisationSpec(
            name="diffusion",
            default_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
            soft_time_limit_s=600,
            time_limit_s=720,
            description="Text-to-image and image-to-image with Stable Diffusion (diffusers).",
            weights="diffusers",
        ),
        SpecialisationSpec(
            name="speech",
            default_model="openai/whisper-small",
            soft_time_limit_s=1800,
            time_limit_s=1900,
            description="Speech recognition with Whisper (transformers or faster-whisper).",
        ),
        SpecialisationSpec(
            name="summarize",
            default_model="facebook/bart-large-cnn",
            soft_time_limit_s=300,
            time_limit_s=360,
            description="Summarization with a BART-family seq2seq model.",
        ),
        SpecialisationSpec(
            name="translate",
            default_model="facebook/nllb-200-distilled-600M",
            soft_time_limit_s=300,
            time_limit_s=360,
            description="Translation with an NLLB-family seq2seq model.",
        ),
        SpecialisationSpec(
            name="clip",
            default_model="openai/clip-vit-base-patch32",
            soft_time_limit_s=120,
            time_limit_s=180,
            description="CLIP image and text embeddings, CLAP sound and text embeddings (two spaces), and ranking.",
        ),
        SpecialisationSpec(
            name="media",
            default_model="pyav",
            soft_time_limit_s=600,
            time_limit_s=720,
            description="Media handling on the CPU (PyAV/FFmpeg): frames and audio out of videos. No model.",
            weights="none",
        ),
        SpecialisationSpec(
            name="sentence",
            default_model="sentence-transformers/all-MiniLM-L6-v2",
            soft_time_limit_s=120,
            time_limit_s=180,
            description="Sentence embeddings (sentence-transformers models) and text ranking.",
        ),
        SpecialisationSpec(
            name="vqa",
            default_model="llava-hf/llava-1.5-7b-hf",
            soft_time_limit_s=300,
            time_limit_s=360,
            description="Visual question answering and long image descriptions (LLaVA or BLIP-2 family).",
        ),
        SpecialisationSpec(
            name="depth",
            default_model="depth-anything/Depth-Anything-V2-Small-hf",
            soft_time_limit_s=120,
            time_limit_s=180,
            description="Monocular depth estimation (Depth Anything or DPT).",
        ),
        SpecialisationSpec(
            name="segment",
            default_model="facebook/sam-vit-base",
            soft_time_limit_s=120,
            time_limit_s=180,
            description="Promptable segmentation with Segment Anything (SAM): points or boxes to masks.",
        ),
        SpecialisationSpec(
            name="features",
            default_model="facebook/dinov2-base",
            soft_time_limit_s=120,
            time_limit_s=180,
            description="Self-supervised image features with DINOv2.",
        ),
        SpecialisationSpec(
            name="speak",
            default_model="facebook/mms-tts-eng",
            soft_time_limit_s=300,
            time_limit_s=360,
            description="Text to speech with VITS (MMS-TTS).",
        ),
        SpecialisationSpec(
            name="compose",
            default_model="facebook/musicgen-small",
            soft_time_limit_s=600,
            time_limit_s=720,
            description="Text to music and sound with MusicGen.",
        ),
        SpecialisationSpec(
            name="text2video",
            default_model="ali-vilab/text-to-video-ms-1.7b",
            soft_time_limit_s=900,
            time_limit_s=1000,
            description="Text to video with a diffusers text-to-video pipeline (ModelScope), encoded with PyAV.",
            weights="diffusers",
        ),
        SpecialisationSpec(
            name="text2mesh",
            default_model="openai/shap-e",
            soft_time_limit_s=600,
            time_limit_s=720,
            description="Text to 3D mesh with Shap-E (diffusers), with a rendered preview.",
            weights="diffusers",
        ),
        SpecialisationSpec(
            name="omni",
            default_model="Qwen/Qwen2.5-Omni-3B",
            soft_time_limit_s=600,
            time_limit_s=720,
            description="Questions about videos with their sound, sounds and images, answered by one omni-modal "
                        "model (Qwen2.5-Omni's thinker; text out).",
        ),
        SpecialisationSpec(
            name="plan",
            default_model="HuggingFaceTB/SmolLM2-360M-Instruct",
            soft_time_limit_s=300,
            time_limit_s=360,
            description="Plans a pipeline from a request in words: an instruction-tuned language model "
                        "decoding under a grammar whose every sentence is a valid pipeline (llguidance).",
        ),
    )
}


# faster-whisper reads CTranslate2 conversions, not transformers checkpoints: its own default.
FASTER_WHISPER_DEFAULT_MODEL = "Systran/faster-whisper-small"
SPEECH_BACKENDS = ("transformers", "faster-whisper")
# The clip worker's second model: CLAP, for sounds beside texts (MMQ_CLIP_SOUND_MODEL; "none" for no sounds).
CLAP_DEFAULT_MODEL = "laion/clap-htsat-unfused"
NO_MODEL = "none"

def worker_name(specialisation: str, gpu: str | None, pid: int, host: str) -> str:
    """The Celery node name of a worker: what Flower shows and what its heartbeat key ends with."""
    where = f"gpu{gpu}" if gpu is not None else "cpu"
    return f"{specialisation}-{where}-{pid}@{host}"
