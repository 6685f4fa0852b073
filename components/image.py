"""The shared base volume every VM's overlay sits on, and how VMs boot from it."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.vm import BootSpec
from lab.spec import LabSpec
from resources.volume import Volume, VolumeArgs, content_hash
from runtime.hostfacts import builtin_image, download_path, kernel_cmdline


class ImageMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class ImageSource:
    """The local file to upload, what it is (the builtin image's key, or the configured image), and its boot."""

    path: str
    key: str
    boot: BootSpec


def resolve_image(spec: LabSpec) -> ImageSource:
    """Where the image is on this host; fails early with what to run."""
    if spec.image_is_builtin:
        built = builtin_image()
        if not built.exists():
            raise ImageMissing(
                f"l2dsr:image: builtin, but the offline base image {built.directory.name} is not built yet: "
                "run ./labctl image (or ./labctl setup)"
            )
        return ImageSource(str(built.disk), built.key, BootSpec(str(built.kernel), str(built.initrd), kernel_cmdline()))
    if spec.image.startswith(("http://", "https://")):
        local = download_path(spec.image)  # downloaded at set-up, never while the program runs
        if not local.exists():
            raise ImageMissing(
                f"l2dsr:image: {spec.image} is not downloaded yet: run ./labctl fetch <stack> "
                "(./labctl up does it before `pulumi up`)"
            )
        return ImageSource(str(local), spec.image, BootSpec())
    return ImageSource(spec.image, spec.image, BootSpec())


@dataclass(frozen=True)
class BaseImageArgs:
    uri: str
    pool: str
    stack: str
    source: ImageSource


class BaseImage(pulumi.ComponentResource):
    path: pulumi.Output[str]

    def __init__(self, name: str, args: BaseImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("l2dsr:lab:BaseImage", name, None, opts)
        self.volume = Volume(
            f"{name}-volume",
            VolumeArgs(
                uri=args.uri,
                pool=args.pool,
                stem=f"l2dsr-{args.stack}-base-{content_hash(args.source.key)}",
                source=args.source.path,
                source_key=args.source.key,
            ),
            pulumi.ResourceOptions(parent=self),
        )
        self.path = self.volume.path
        # The builtin image boots its own kernel (direct kernel boot): a path on the VM's host, so they
        # travel to every host as volumes beside the disk.
        self.kernel: pulumi.Output[str] = pulumi.Output.from_input("")
        self.initrd: pulumi.Output[str] = pulumi.Output.from_input("")
        for part in ("kernel", "initrd"):
            source = getattr(args.source.boot, part)
            if source:
                volume = Volume(
                    f"{name}-{part}",
                    VolumeArgs(
                        uri=args.uri,
                        pool=args.pool,
                        stem=f"l2dsr-{args.stack}-{part}-{content_hash(args.source.key)}",
                        ext="img",
                        source=source,
                        source_key=args.source.key,
                    ),
                    pulumi.ResourceOptions(parent=self),
                )
                setattr(self, part, volume.path)
        self.register_outputs({"path": self.path, "kernel": self.kernel, "initrd": self.initrd})
