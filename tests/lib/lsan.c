/* tests/lib/lsan.c - LeakSanitizer suppressions for every test binary
 * (tests/lib/ objects are linked into all of them). With SAN=1 the ASan
 * runtime calls this hook at start-up.
 *
 * libcriterion.so leaks a 48-byte calloc in the runner process when a test
 * uses .timeout (criterion 2.4); LSan then fails the whole binary at exit
 * although every test passed. Only leaks whose stack passes through
 * libcriterion are suppressed: leaks in forkvm code still fail the run. */

const char *__lsan_default_suppressions(void);

const char *__lsan_default_suppressions(void)
{
	return "leak:libcriterion.so\n";
}
