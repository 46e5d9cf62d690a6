"""Boot media: cpio archives and the per-VM initrd assembled from them."""
