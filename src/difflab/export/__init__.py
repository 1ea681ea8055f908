"""Models leaving difflab and coming in: diffusers' UNet2DModel (both ways) and a safetensors + JSON folder."""
