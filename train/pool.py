"""The image pool of Shrivastava et al. (2017), as the CycleGAN reference uses it: the
discriminators see a mix of the newest fakes and fakes from earlier iterations, which damps
the oscillation of the adversarial game."""

from __future__ import annotations

import torch


class ImagePool:
    """Holds up to `size` earlier generated images.

    For each new image: while the pool is filling, store it and return it; after that, with
    probability 1/2 return a random stored image and put the new one in its place, otherwise
    return the new one. Size 0 disables the pool. Random draws come from the pool's own CPU
    generator, whose state is part of `state_dict`, so a resumed run draws what an
    uninterrupted one would.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
                continue
            if torch.rand((), generator=self.generator).item() > 0.5:
                k = int(torch.randint(0, self.size, (), generator=self.generator))
                old = self.images[k]
                self.images[k] = image.clone()
                out.append(old)
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        # CPU copies: a checkpoint must load on any device, with weights_only=True.
        return {"size": self.size, "images": [t.detach().cpu() for t in self.images],
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.size = int(state["size"])
        self.images = [t.to(device) for t in state["images"]]
        self.generator.set_state(state["generator"])
