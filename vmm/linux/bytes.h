/* vmm/linux/bytes.h - private: little-endian fields of the firmware
 * structures a Linux guest reads (the zero page, the MP table, the ACPI
 * tables), and their 8-bit checksum. Include only from vmm/linux/. */
#ifndef FORKVM_VMM_LINUX_BYTES_H
#define FORKVM_VMM_LINUX_BYTES_H

#include <stddef.h>
#include <stdint.h>

static inline uint16_t lx_rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t lx_rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t lx_rd64(const uint8_t *p)
{
	return (uint64_t)lx_rd32(p) | (uint64_t)lx_rd32(p + 4) << 32;
}

static inline void lx_wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void lx_wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void lx_wr64(uint8_t *p, uint64_t v)
{
	lx_wr32(p, (uint32_t)v);
	lx_wr32(p + 4, (uint32_t)(v >> 32));
}

/* The byte that makes p[0..n) sum to zero when it is added. */
static inline uint8_t lx_checksum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	for (size_t i = 0; i < n; i++)
		s = (uint8_t)(s + p[i]);
	return (uint8_t)(0x100 - s);
}

#endif
