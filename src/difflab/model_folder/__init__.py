"""Model folders, read and written in one room: difflab's safetensors + JSON folder (export.py format=safetensors,
read back by difflab.load) and diffusers' folders (a DDPM pipeline written, a UNet2DModel read for fine-tuning)."""
