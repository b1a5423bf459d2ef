/* vmm/linux/uart.c - a 16550A UART: the Linux guest's ttyS0. Transmits at
 * once (the line is always empty), so the transmitter-empty interrupt
 * follows every write. Receives what the console channel's client sends
 * (--serial socket=PATH): the channel's input ring is the receive FIFO,
 * filled by the loop thread as bytes arrive, which then tells the UART
 * (uart_on_input). The interrupt line follows IIR: raised while an
 * enabled interrupt is pending (received data first, then transmitter
 * empty), lowered when none is (the ISA line is edge-triggered: the
 * driver reads IIR until it says none). */
#include <errno.h>
#include <string.h>

#include "common/util.h"
#include "vmm/chan.h"
#include "vmm/linux/linux.h"
#include "vmm/state.h"
#include "vmm/vm.h"

/* Bytes waiting for the guest (not in loopback, where the line is the
 * UART's own). */
static bool uart_rx_ready(struct uart *u)
{
	if (!u->rx || (u->s.mcr & UART_MCR_LOOP))
		return false;
	pthread_mutex_lock(&u->vm->lock);
	bool ready = chan_input_queued_locked(&u->vm->console) > 0;
	pthread_mutex_unlock(&u->vm->lock);
	return ready;
}

static uint8_t uart_iir(struct uart *u)
{
	const struct uart_state *s = &u->s;
	uint8_t fifo = (s->fcr & UART_FCR_ENABLE) ? UART_IIR_FIFO : 0;
	if ((s->ier & UART_IER_RDI) && uart_rx_ready(u))
		return fifo | UART_IIR_RDI;
	if ((s->ier & UART_IER_THRI) && s->thr_irq)
		return fifo | UART_IIR_THRI;
	return fifo | UART_IIR_NO_INT;
}

static void uart_update_irq(struct uart *u)
{
	bool level = !(uart_iir(u) & UART_IIR_NO_INT);
	if (level == u->s.irq_level)
		return;
	u->s.irq_level = level;
	if (u->vm->plat->irq_line)
		u->vm->plat->irq_line(u->vm, u->irq, level ? 1 : 0);
}

/* The modem status a loopback test expects: DCD, RI, DSR, CTS from OUT2,
 * OUT1, DTR, RTS. Outside loopback: carrier, DSR and CTS up. */
static uint8_t uart_msr(const struct uart_state *s)
{
	if (s->mcr & UART_MCR_LOOP) {
		uint8_t m = s->mcr;
		return (uint8_t)(((m & 0x08) << 4) | ((m & 0x04) << 4) | ((m & 0x01) << 5) |
				 ((m & 0x02) << 3));
	}
	return 0xb0;
}

static void uart_transmit(struct uart *u, uint8_t b)
{
	struct vm *vm = u->vm;

	if (!(u->s.mcr & UART_MCR_LOOP)) {
		pthread_mutex_lock(&vm->lock);
		(void)chan_write_locked(&vm->console, &b, 1);
		pthread_mutex_unlock(&vm->lock);
	}
	u->s.thr_irq = true;
}

/* The next received byte (0 when none). */
static uint8_t uart_rx(struct uart *u)
{
	uint8_t b = 0;
	if (!u->rx || (u->s.mcr & UART_MCR_LOOP))
		return 0;
	pthread_mutex_lock(&u->vm->lock);
	if (chan_read_locked(&u->vm->console, &b, 1) != 1)
		b = 0;
	pthread_mutex_unlock(&u->vm->lock);
	return b;
}

static enum vcpu_action uart_io(void *dev, struct vcpu *v, uint64_t off, void *data, unsigned len,
				bool is_write)
{
	struct uart *u = dev;
	struct uart_state *s = &u->s;
	uint8_t *b = data;

	(void)v;
	pthread_mutex_lock(&u->lock);
	bool dlab = s->lcr & UART_LCR_DLAB;
	if (len != 1) {
		/* Wider accesses: bytes beyond the first read as all ones. */
		if (!is_write)
			memset(b, 0xff, len);
	}
	if (is_write) {
		switch (off) {
		case UART_THR:
			if (dlab)
				s->dll = b[0];
			else
				uart_transmit(u, b[0]);
			break;
		case UART_IER:
			if (dlab) {
				s->dlm = b[0];
			} else {
				/* Enabling THRI with the line empty interrupts at once. */
				if (!(s->ier & UART_IER_THRI) && (b[0] & UART_IER_THRI))
					s->thr_irq = true;
				s->ier = b[0] & 0x0f;
			}
			break;
		case UART_FCR:
			s->fcr = b[0] & 0xc9;
			break;
		case UART_LCR:
			s->lcr = b[0];
			break;
		case UART_MCR:
			s->mcr = b[0] & 0x1f;
			break;
		case UART_LSR:
		case UART_MSR:
			break; /* read-only */
		case UART_SCR:
			s->scr = b[0];
			break;
		}
	} else {
		switch (off) {
		case UART_RBR:
			b[0] = dlab ? s->dll : uart_rx(u);
			break;
		case UART_IER:
			b[0] = dlab ? s->dlm : s->ier;
			break;
		case UART_IIR:
			b[0] = uart_iir(u);
			/* Reading IIR acknowledges the transmitter-empty interrupt. */
			if ((b[0] & 0x0f) == UART_IIR_THRI)
				s->thr_irq = false;
			break;
		case UART_LCR:
			b[0] = s->lcr;
			break;
		case UART_MCR:
			b[0] = s->mcr;
			break;
		case UART_LSR:
			b[0] = UART_LSR_THRE | UART_LSR_TEMT | (uart_rx_ready(u) ? UART_LSR_DR : 0);
			break;
		case UART_MSR:
			b[0] = uart_msr(s);
			break;
		case UART_SCR:
			b[0] = s->scr;
			break;
		}
	}
	uart_update_irq(u);
	pthread_mutex_unlock(&u->lock);
	return VCPU_CONTINUE;
}

/* The console channel received bytes (loop thread): the received-data
 * interrupt, if the guest enabled it. */
static void uart_on_input(void *arg)
{
	struct uart *u = arg;

	pthread_mutex_lock(&u->lock);
	uart_update_irq(u);
	pthread_mutex_unlock(&u->lock);
}

int uart_register(struct vm *vm, struct uart *u, uint16_t base, unsigned irq)
{
	int rc;

	memset(u, 0, sizeof(*u));
	u->vm = vm;
	u->irq = irq;
	u->s.lcr = 0x03; /* 8N1 */
	u->s.mcr = 0x08; /* OUT2 */
	u->s.dll = 12;	 /* 9600 baud */
	if ((rc = pthread_mutex_init(&u->lock, NULL)) != 0)
		return -rc;
	if ((rc = bus_register(&vm->pio, base, 8, "uart", uart_io, u)) < 0) {
		pthread_mutex_destroy(&u->lock);
		u->vm = NULL;
		return rc;
	}
	return 0;
}

void uart_take_input(struct uart *u)
{
	pthread_mutex_lock(&u->vm->lock);
	u->rx = true;
	u->vm->console.on_input = uart_on_input;
	u->vm->console.on_input_arg = u;
	pthread_mutex_unlock(&u->vm->lock);
}

void uart_destroy(struct uart *u)
{
	if (!u->vm)
		return;
	pthread_mutex_lock(&u->vm->lock);
	if (u->vm->console.on_input_arg == u)
		u->vm->console.on_input = NULL;
	pthread_mutex_unlock(&u->vm->lock);
	pthread_mutex_destroy(&u->lock);
	u->vm = NULL;
}

/* ------------------------------------------------------------ state */

int uart_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	const struct uart_state *s = &((struct uart *)arg)->s;
	(void)vm;
	*out = json_pack("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:b,s:b}", "ier", s->ier, "lcr",
			 s->lcr, "mcr", s->mcr, "lsr_extra", s->lsr_extra, "msr", s->msr, "scr",
			 s->scr, "dll", s->dll, "dlm", s->dlm, "fcr", s->fcr, "thr_irq", s->thr_irq,
			 "irq_level", s->irq_level);
	return *out ? 0 : err_fail(err, errlen, -ENOMEM, "out of memory");
}

int uart_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
		 size_t errlen)
{
	static const char *const keys[] = { "ier", "lcr", "mcr", "lsr_extra", "msr",
					    "scr", "dll", "dlm", "fcr" };
	struct uart *u = arg;
	struct uart_state s;
	uint8_t *regs[] = { &s.ier, &s.lcr, &s.mcr, &s.lsr_extra, &s.msr,
			    &s.scr, &s.dll, &s.dlm, &s.fcr };
	(void)vm;
	(void)version;
	memset(&s, 0, sizeof(s));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		uint32_t v;
		int rc = state_get_u32(st, keys[i], &v, err, errlen);
		if (rc < 0)
			return rc;
		if (v > 0xff)
			return err_fail(err, errlen, -EINVAL, "register %s is %u: not a byte", keys[i], v);
		*regs[i] = (uint8_t)v;
	}
	int rc = state_get_bool(st, "thr_irq", &s.thr_irq, err, errlen);
	if (rc == 0)
		rc = state_get_bool(st, "irq_level", &s.irq_level, err, errlen);
	if (rc < 0)
		return rc;
	/* the interrupt line's level is the irqchip's state, restored with it */
	u->s = s;
	return 0;
}
