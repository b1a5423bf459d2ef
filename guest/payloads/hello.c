/* guest/payloads/hello.c - the smallest payload: prints its arguments on
 * stdout and its environment on stderr, exits with argc - 1. */
#include <stdio.h>

int main(int argc, char **argv, char **envp)
{
	for (int i = 0; i < argc; i++)
		printf("argv[%d]=%s\n", i, argv[i]);
	for (char **e = envp; *e; e++)
		fprintf(stderr, "env %s\n", *e);
	return argc - 1;
}
