"""The lab's resources as Pulumi dynamic providers, one module each: identity and SSH key
(identity.py), network (network.py), volumes and the cloud-init seed (volume.py), domain
(domain.py), readiness (readiness.py), a guest's state (gueststate.py), the benchmark
(benchmark.py); what they share, and how each declares its inputs and outputs once, in base.py.

Why not pulumi-libvirt and pulumi-command: their Go modules (and terraform-provider-libvirt's) are
not served by the module proxy these machines reach, and upstream has deprecated pulumi-libvirt.
Where the semantics agree, ours take their names and arguments (`Network`, `Domain`, `Volume`,
`CloudInitDisk`; the benchmark a `Command` with `connection`, `create`, `delete`, `triggers`), so a
user who has those packages swaps one module here; each module says where ours differ and why.

The lifecycle every libvirt resource here follows:
- an input change replaces it, never updates it in place;
- a domain or network keeps its stable name and is replaced delete-first; its UUID marks it as
  this stack's and as the one this resource created (virt/ownership.py), so a delete never removes
  another stack's object or a replacement's new one, and a same-named foreign object is refused at
  preview; volumes get a fresh name per creation, so they are replaced create-first;
- drift is read from the host on every preview/up (`diff`) and on `pulumi refresh` (`read`): a
  missing object, or a stopped domain or network, is created again (and what stands on it follows:
  a domain on a new network, readiness and the benchmark on a new domain), so preview shows all of it;
- libvirt not answering is an error, never "absent" (virt/virsh.py).

The provider code runs in our provider process (engine/provider_host.py), which imports these
modules by name (PYTHONPATH is the project root).
"""
