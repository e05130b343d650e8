"""Model stages: CLIP embeddings and the heads that read them, VLM captions, text embeddings, VAE latents."""
