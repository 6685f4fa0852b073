"""The shared base volume every VM's overlay sits on, and how VMs boot from it."""

from __future__ import annotations

import pulumi

from components.providers import LibvirtVolume, content_hash
from components.vm import BootSpec
from hypervisor import downloads
from hypervisor import image as builder
from lab.config import LabSpec


class ImageMissing(RuntimeError):
    pass


def resolve_image(spec: LabSpec) -> tuple[str, BootSpec]:
    """The local file to upload, and the boot it needs; fails early with what to run."""
    if spec.image_is_builtin:
        built = builder.builtin_image()
        if not built.exists():
            raise ImageMissing(
                f"l2dsr:image: builtin, but the offline base image {built.directory.name} is not built yet: "
                "run ./labctl image (or ./labctl setup)"
            )
        return str(built.disk), BootSpec(str(built.kernel), str(built.initrd), builder.KERNEL_CMDLINE)
    if spec.image.startswith(("http://", "https://")):
        local = downloads.download_path(spec.image)  # downloaded at set-up, never while the program runs
        if not local.exists():
            raise ImageMissing(
                f"l2dsr:image: {spec.image} is not downloaded yet: run ./labctl fetch <stack> "
                "(./labctl up does it before `pulumi up`)"
            )
        return str(local), BootSpec()
    return spec.image, BootSpec()


class BaseImage(pulumi.ComponentResource):
    path: pulumi.Output[str]

    def __init__(
        self, name: str, *, stack: str, spec: LabSpec, source: str, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("l2dsr:lab:BaseImage", name, None, opts)
        key = builder.image_key(builder.Recipe()) if spec.image_is_builtin else spec.image
        self.volume = LibvirtVolume(
            f"{name}-volume",
            uri=spec.libvirt_uri,
            pool=spec.storage_pool,
            stem=f"l2dsr-{stack}-base-{content_hash(key)}",
            source=source,
            source_key=key,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.path = self.volume.path
        self.register_outputs({"path": self.path})
