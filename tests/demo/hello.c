/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * A "module" for the demo (tests/demo.sh): compiled to a relocatable object on
 * the build machine and loaded into the simulated kernel, the way FreeBSD's
 * kernel linker loads a .ko. It mimics the static symbols a real module gets
 * from DECLARE_MODULE(hello, ...), which is how `ksyms summary` names the linker
 * files of a real kernel.
 */

struct mod_depend {
	int	md_ver_minimum;
	int	md_ver_preferred;
	int	md_ver_maximum;
};

/* What MODULE_DEPEND(hello, kernel, ...) inside DECLARE_MODULE leaves behind. */
static struct mod_depend _hello_depend_on_kernel
    __attribute__((used)) = { 1302000, 1302000, 1399999 };

static int hello_loads;
int hello_verbose = 1;

static int
hello_greet(int n)
{

	return (n * 2 + hello_verbose);
}

int
hello_modevent(void *mod, int type, void *arg)
{

	(void)mod;
	(void)arg;
	hello_loads++;
	return (type == 0 ? hello_greet(hello_loads) : 0);
}
