/* guest/agent/text.c - byte-level helpers for JSON text: UTF-8 repair of
 * Duktape's output and raw lookup of a top-level member (the request id). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

/* Length of the valid UTF-8 sequence at s[0, n), or 0 if there is none. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f; /* no surrogates */
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	}
	return len;
}

/* Returns the surrogate encoded (CESU-8) at s[0, n), or 0 if none. */
static unsigned surrogate_at(const unsigned char *s, size_t n)
{
	if (n < 3 || s[0] != 0xed || s[1] < 0xa0 || s[1] > 0xbf || (s[2] & 0xc0) != 0x80)
		return 0;
	return 0xd000u | (unsigned)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
}

/* Walks s[0, n), writing the repaired text to out when out != NULL.
 * Returns the repaired length. */
static size_t utf8_repair(const unsigned char *s, size_t n, unsigned char *out)
{
	size_t i = 0, o = 0;

	while (i < n) {
		size_t k = utf8_seq(s + i, n - i);
		unsigned hs = k ? 0 : surrogate_at(s + i, n - i);
		unsigned ls = hs >= 0xd800 && hs <= 0xdbff ? surrogate_at(s + i + 3, n - i - 3) : 0;

		if (k > 0) {
			if (out)
				memcpy(out + o, s + i, k);
			o += k;
			i += k;
		} else if (ls >= 0xdc00 && ls <= 0xdfff) {
			unsigned cp = 0x10000u + ((hs - 0xd800u) << 10) + (ls - 0xdc00u);

			if (out) {
				out[o] = (unsigned char)(0xf0 | cp >> 18);
				out[o + 1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
				out[o + 2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
				out[o + 3] = (unsigned char)(0x80 | (cp & 0x3f));
			}
			o += 4;
			i += 6;
		} else {
			/* U+FFFD for the lead byte and its continuation bytes */
			if (out)
				memcpy(out + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
			for (int c = 0; c < 6 && i < n && (s[i] & 0xc0) == 0x80; c++)
				i++;
		}
	}
	return o;
}

/* Returns NULL if s is valid UTF-8, else a malloc'd repaired copy (length in
 * *out_len); sets *oom and returns NULL when the copy cannot be allocated. */
char *agent_utf8_fix(const char *s, size_t len, size_t *out_len, int *oom)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	*oom = 0;
	while (i < len) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		size_t k = utf8_seq(u + i, len - i);

		if (k == 0)
			break;
		i += k;
	}
	if (i == len)
		return NULL;

	size_t n = i + utf8_repair(u + i, len - i, NULL);
	char *out = malloc(n ? n : 1);

	if (!out) {
		*oom = 1;
		return NULL;
	}
	memcpy(out, s, i);
	utf8_repair(u + i, len - i, (unsigned char *)out + i);
	*out_len = n;
	return out;
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	return i;
}

/* s[*i] is '"': moves *i past the closing quote. Returns 0 or -EINVAL. */
static int skip_string(const char *s, size_t n, size_t *i)
{
	for (size_t j = *i + 1; j < n; j++) {
		if (s[j] == '\\')
			j++;
		else if (s[j] == '"') {
			*i = j + 1;
			return 0;
		}
	}
	return -EINVAL;
}

/* Moves *i past the JSON value starting there. Returns 0 or -EINVAL. */
static int skip_value(const char *s, size_t n, size_t *i)
{
	size_t j = *i;
	int depth = 0;

	if (j >= n)
		return -EINVAL;
	if (s[j] != '{' && s[j] != '[' && s[j] != '"') { /* number or literal */
		while (j < n && !strchr(",}] \t\n\r", s[j]))
			j++;
		if (j == *i)
			return -EINVAL;
		*i = j;
		return 0;
	}
	do {
		if (j >= n)
			return -EINVAL;
		if (s[j] == '"') {
			if (skip_string(s, n, &j) < 0)
				return -EINVAL;
			continue;
		}
		if (s[j] == '{' || s[j] == '[')
			depth++;
		else if (s[j] == '}' || s[j] == ']')
			depth--;
		j++;
	} while (depth > 0);
	*i = j;
	return 0;
}

/* Finds the raw text of top-level member key in the JSON object s[0, len).
 * Returns 1 (found; the last duplicate wins), 0 if absent, -EINVAL. */
int agent_json_member(const char *s, size_t len, const char *key, const char **val, size_t *vlen)
{
	size_t klen = strlen(key);
	size_t i = skip_ws(s, len, 0);
	int found = 0;

	if (i >= len || s[i] != '{')
		return -EINVAL;
	i = skip_ws(s, len, i + 1);
	if (i < len && s[i] == '}')
		return 0;
	for (;;) {
		if (i >= len || s[i] != '"')
			return -EINVAL;
		size_t kstart = i + 1;

		if (skip_string(s, len, &i) < 0)
			return -EINVAL;
		size_t kend = i - 1;

		i = skip_ws(s, len, i);
		if (i >= len || s[i] != ':')
			return -EINVAL;
		i = skip_ws(s, len, i + 1);
		size_t vstart = i;

		if (skip_value(s, len, &i) < 0)
			return -EINVAL;
		if (kend - kstart == klen && memcmp(s + kstart, key, klen) == 0) {
			*val = s + vstart;
			*vlen = i - vstart;
			found = 1;
		}
		i = skip_ws(s, len, i);
		if (i < len && s[i] == ',') {
			i = skip_ws(s, len, i + 1);
			continue;
		}
		if (i < len && s[i] == '}')
			return found;
		return -EINVAL;
	}
}
