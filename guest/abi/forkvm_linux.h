/* guest/abi/forkvm_linux.h - what a Linux guest's processes need to find
 * forkvm's services: the agent channel's vsock port and the identity page's
 * guest-physical address. Shared by the VMM and the agent; plain C.
 *
 * A Linux guest has no auxiliary vector from forkvm: its identity page
 * (guest/abi/forkvm_identity.h, the same struct and semantics as a function
 * guest's) sits at FORKVM_IDENTITY_LINUX_GPA, a page of the e820-reserved
 * area below 1 MiB (between the VM generation ID at 0xef000 and the reset
 * vector at 0xffff0; docs/linux-guests.md), which a root process reads
 * through /dev/mem (the agent's --identity-devmem). Being reserved, not
 * RAM, the kernel never allocates it, and STRICT_DEVMEM allows a page below
 * 1 MiB that is not System RAM.
 *
 * The agent channel: a guest-initiated vsock stream connection to the host
 * (CID 2, VMADDR_CID_HOST) on port FORKVM_AGENT_VSOCK_PORT is the VM's agent
 * channel (forkvm --agent socket=PATH). */
#ifndef FORKVM_GUEST_ABI_LINUX_H
#define FORKVM_GUEST_ABI_LINUX_H

#define FORKVM_AGENT_VSOCK_PORT 1024
#define FORKVM_IDENTITY_LINUX_GPA 0xf0000UL /* one 4 KiB page; guests only read it */

#endif
