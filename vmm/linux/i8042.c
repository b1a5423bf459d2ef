/* vmm/linux/i8042.c - the PC keyboard controller, as much of it as a
 * Linux guest without a keyboard uses: its probe (self-test, the
 * configuration byte) and the CPU reset line, which ends the VM the way
 * `reboot` does under Firecracker (exit status 0). */
#include <string.h>

#include "vmm/linux/linux.h"
#include "vmm/vm.h"

#define I8042_DATA 0
#define I8042_CMD 4
#define I8042_STATUS_OBF 0x01
#define I8042_STATUS_SYS 0x04
#define I8042_STATUS_UNLOCKED 0x10 /* keyboard not inhibited (no keylock) */

#define CMD_READ_CTR 0x20
#define CMD_WRITE_CTR 0x60
#define CMD_SELF_TEST 0xaa
#define CMD_RESET 0xfe

static void put(struct i8042 *k, uint8_t b)
{
	k->out = b;
	k->out_full = true;
}

static enum vcpu_action i8042_io(void *dev, struct vcpu *v, uint64_t off, void *data, unsigned len,
				 bool is_write)
{
	struct i8042 *k = dev;
	uint8_t *b = data;

	(void)v;
	if (!is_write)
		memset(b, 0, len);
	if (off == I8042_CMD && is_write) {
		k->cmd = 0;
		switch (b[0]) {
		case CMD_RESET:
			vm_terminate(k->vm, 0, false, "guest reset the machine (i8042 reset line)");
			return VCPU_STOP;
		case CMD_READ_CTR:
			put(k, k->ctr);
			break;
		case CMD_WRITE_CTR:
			k->cmd = CMD_WRITE_CTR;
			break;
		case CMD_SELF_TEST:
			put(k, 0x55);
			break;
		default:
			break; /* no ports to test, enable or disable */
		}
	} else if (off == I8042_CMD) {
		b[0] = (uint8_t)(I8042_STATUS_SYS | I8042_STATUS_UNLOCKED |
				 (k->out_full ? I8042_STATUS_OBF : 0));
	} else if (off == I8042_DATA && is_write) {
		if (k->cmd == CMD_WRITE_CTR)
			k->ctr = b[0];
		k->cmd = 0;
	} else if (off == I8042_DATA) {
		b[0] = k->out_full ? k->out : 0;
		k->out_full = false;
	}
	return VCPU_CONTINUE;
}

int i8042_register(struct vm *vm, struct i8042 *k)
{
	memset(k, 0, sizeof(*k));
	k->vm = vm;
	k->ctr = 0x30; /* both ports' clocks disabled, no interrupts */
	return bus_register(&vm->pio, LX_I8042_PORT, 5, "i8042", i8042_io, k);
}
