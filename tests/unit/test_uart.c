/* tests/unit/test_uart.c - vmm/linux/uart.c, the Linux guest's 16550A,
 * driven through its ports as Linux's 8250 driver does, on a VM without
 * KVM whose console channel is a socket: received bytes (the channel's
 * input ring) show in LSR, are read from RBR in order, and raise the
 * received-data interrupt before the transmitter-empty one; transmit goes
 * to the channel; loopback keeps both to the UART. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/lib/unit.h"
#include "vmm/chan.h"
#include "vmm/linux/linux.h"
#include "vmm/state.h"
#include "vmm/vm.h"

static struct vm *vm;
static struct uart uart;
static char *dir;

static void setup(void)
{
	char err[512] = "", *sock;

	dir = ut_tmpdir();
	cr_assert(asprintf(&sock, "%s/serial.sock", dir) > 0);
	struct ut_vm_opts o = { .payload = "hello", .serial_socket = sock };
	cr_assert_eq(ut_vm_create(&o, err, sizeof(err), &vm), 0, "%s", err);
	free(sock);
	cr_assert_eq(uart_register(vm, &uart, LX_COM1_PORT, LX_COM1_IRQ), 0);
	uart_take_input(&uart);
}

static void teardown(void)
{
	uart_destroy(&uart);
	vm_destroy(vm);
	ut_rmtree(dir);
	free(dir);
}

TestSuite(uart, .init = setup, .fini = teardown);

static uint8_t in(unsigned off)
{
	uint8_t b = 0xee;
	const struct bus_range *r = bus_find(&vm->pio, LX_COM1_PORT + off, 1);
	cr_assert_not_null(r);
	r->io(r->dev, NULL, off, &b, 1, false);
	return b;
}

static void out(unsigned off, uint8_t b)
{
	const struct bus_range *r = bus_find(&vm->pio, LX_COM1_PORT + off, 1);
	r->io(r->dev, NULL, off, &b, 1, true);
}

/* What a client sent: bytes in the console channel's input ring. */
static void client_sends(const char *text)
{
	char err[256];
	json_t *st = json_pack("{s:o,s:o}", "output", state_json_blob("", 0), "input",
			       state_json_blob(text, strlen(text)));
	cr_assert_eq(chan_restore(&vm->console, st, err, sizeof(err)), 0, "%s", err);
	json_decref(st);
	vm->console.on_input(vm->console.on_input_arg); /* as the loop does */
}

Test(uart, received_bytes_are_read_in_order_with_their_interrupt)
{
	cr_assert_eq(in(UART_LSR) & UART_LSR_DR, 0, "nothing received yet");
	out(UART_IER, UART_IER_RDI | UART_IER_THRI);
	cr_assert_eq(in(UART_IIR) & 0x0f, UART_IIR_THRI, "THRE at once");
	cr_assert_eq(in(UART_IIR) & 0x0f, UART_IIR_NO_INT, "read once: acknowledged");
	cr_assert_not(uart.s.irq_level);
	client_sends("hi\n");
	cr_assert(uart.s.irq_level, "input raises the line");
	cr_assert(in(UART_LSR) & UART_LSR_DR);
	out(UART_THR, 'x'); /* a THRE interrupt pending too: RDI comes first */
	cr_assert_eq(in(UART_IIR) & 0x0f, UART_IIR_RDI);
	cr_assert_eq(in(UART_RBR), 'h');
	cr_assert_eq(in(UART_RBR), 'i');
	cr_assert_eq(in(UART_RBR), '\n');
	cr_assert_eq(in(UART_LSR) & UART_LSR_DR, 0, "all read");
	cr_assert_eq(in(UART_IIR) & 0x0f, UART_IIR_THRI, "then THRE");
	cr_assert_eq(in(UART_IIR) & 0x0f, UART_IIR_NO_INT);
	cr_assert_not(uart.s.irq_level, "and the line drops");
	cr_assert_eq(in(UART_RBR), 0, "an empty FIFO reads 0");
}

Test(uart, input_without_rdi_enabled_waits_quietly)
{
	client_sends("q");
	cr_assert_not(uart.s.irq_level);
	cr_assert(in(UART_LSR) & UART_LSR_DR, "polled mode still sees it");
	cr_assert_eq(in(UART_RBR), 'q');
	/* the divisor latch hides RBR */
	client_sends("z");
	out(UART_LCR, UART_LCR_DLAB | 3);
	cr_assert_eq(in(UART_RBR), 12, "DLL");
	out(UART_LCR, 3);
	cr_assert_eq(in(UART_RBR), 'z');
}

Test(uart, loopback_keeps_the_line_to_itself)
{
	client_sends("a");
	out(UART_MCR, UART_MCR_LOOP | 0x0f);
	cr_assert_eq(in(UART_LSR) & UART_LSR_DR, 0, "the client's byte is not on the loop");
	cr_assert_eq(in(UART_RBR), 0);
	out(UART_MCR, 0x08);
	cr_assert_eq(in(UART_RBR), 'a', "still there after loopback");
}

Test(uart, a_port_whose_console_is_elsewhere_receives_nothing)
{
	uart.rx = false; /* the console is hvc0 */
	client_sends("x");
	cr_assert_eq(in(UART_LSR) & UART_LSR_DR, 0);
	cr_assert_eq(in(UART_RBR), 0);
}
