"""Image-quality metrics: FID and KID (offline Inception), PSNR and SSIM."""
