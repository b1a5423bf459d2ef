/* vmm/linux/i8042.c - the PC keyboard controller, as much of it as a
 * Linux guest without a keyboard uses: its probe (self-test, the
 * configuration byte) and the CPU reset line, which ends the VM the way
 * `reboot` does under Firecracker (exit status 0). */
#include <errno.h>
#include <string.h>

#include "common/util.h"
#include "vmm/linux/linux.h"
#include "vmm/state.h"
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

/* ------------------------------------------------------------ state */

int i8042_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	const struct i8042 *k = arg;
	(void)vm;
	*out = json_pack("{s:i,s:i,s:b,s:i}", "cmd", k->cmd, "ctr", k->ctr, "out_full", k->out_full,
			 "out", k->out);
	return *out ? 0 : err_fail(err, errlen, -ENOMEM, "out of memory");
}

int i8042_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
		  size_t errlen)
{
	struct i8042 *k = arg;
	uint32_t cmd, ctr, out;
	bool full;
	int rc;
	(void)vm;
	(void)version;
	if ((rc = state_get_u32(st, "cmd", &cmd, err, errlen)) < 0 ||
	    (rc = state_get_u32(st, "ctr", &ctr, err, errlen)) < 0 ||
	    (rc = state_get_u32(st, "out", &out, err, errlen)) < 0 ||
	    (rc = state_get_bool(st, "out_full", &full, err, errlen)) < 0)
		return rc;
	if (cmd > 0xff || ctr > 0xff || out > 0xff)
		return err_fail(err, errlen, -EINVAL, "a register is not a byte");
	k->cmd = (uint8_t)cmd;
	k->ctr = (uint8_t)ctr;
	k->out = (uint8_t)out;
	k->out_full = full;
	return 0;
}
