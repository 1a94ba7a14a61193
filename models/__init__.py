"""Torch modules of cubestream, each streaming one in two forms: parallel (training) and recurrent (live)."""
from models.answerer import Answer, Answerer, QuestionError
from models.cube_encoder import ClipCubes, CubeEncoder
from models.cubing import GumbelCubing
from models.resampler import CubeResampler
from models.stream_encoder import StreamEncoder, StreamInputError
from models.temporal import MambaTemporalEncoder
from models.vision import VisionEncoder

__all__ = ["VisionEncoder", "MambaTemporalEncoder", "GumbelCubing", "CubeResampler", "CubeEncoder", "ClipCubes",
           "StreamEncoder", "StreamInputError", "Answerer", "Answer", "QuestionError"]
