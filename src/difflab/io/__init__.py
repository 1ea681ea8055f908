"""Reading and writing images, grids and arrays (file I/O is kept out of diffusion/ and models/)."""
