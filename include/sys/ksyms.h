/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * sys/ksyms.h: the ioctl(2) requests of /dev/ksyms, for C consumers.
 *
 * FreeBSD removed this header from the base system in 2017, together with the
 * ioctls of its in-tree driver; the ksyms.ko of this project serves both again,
 * with the same names and request numbers as before. See ksyms(4).
 *
 * Include <sys/types.h> (for size_t) first, as with the other sys/ headers; this
 * header includes it anyway so that it also stands alone.
 */

#ifndef _SYS_KSYMS_H_
#define	_SYS_KSYMS_H_

#include <sys/types.h>
#include <sys/ioccom.h>

/*
 * The size in bytes of the snapshot behind this descriptor (size_t).
 * 0x40086c01 for a 64-bit process, 0x40046c01 for a 32-bit one.
 */
#define	KIOCGSIZE	_IOR('l', 1, size_t)

/*
 * The address of the snapshot's read-only mapping in the process that opened
 * the device (void *); also valid in children forked after the open.
 * 0x40086c02 for a 64-bit process, 0x40046c02 for a 32-bit one.
 */
#define	KIOCGADDR	_IOR('l', 2, void *)

#endif /* !_SYS_KSYMS_H_ */
