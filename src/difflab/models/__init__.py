"""Denoising networks: the DDPM U-Net, the Diffusion Transformer and their building blocks, and LDM's KL
autoencoder (pure torch)."""

from difflab.models.attention import CrossAttention, SelfAttention
from difflab.models.autoencoder import AutoencoderKL
from difflab.models.dit import DiT
from difflab.models.embeddings import TimeEmbedding, timestep_embedding
from difflab.models.resample import Downsample, Upsample
from difflab.models.resblock import ResidualBlock
from difflab.models.unet import UNet

__all__ = [
    "AutoencoderKL",
    "CrossAttention",
    "DiT",
    "Downsample",
    "ResidualBlock",
    "SelfAttention",
    "TimeEmbedding",
    "UNet",
    "Upsample",
    "timestep_embedding",
]
