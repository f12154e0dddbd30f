/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * A second "module" for the demo (tests/demo.sh). It declares no module
 * metadata, so `ksyms summary` names its linker file by its source file.
 */

#include <stddef.h>

static unsigned long counter_buckets[64];
unsigned long counter_total;

void
counter_add(unsigned int bucket, unsigned long n)
{

	counter_buckets[bucket % 64] += n;
	counter_total += n;
}

unsigned long
counter_get(unsigned int bucket)
{

	return (counter_buckets[bucket % 64]);
}

size_t
counter_nbuckets(void)
{

	return (sizeof(counter_buckets) / sizeof(counter_buckets[0]));
}
