// SPDX-License-Identifier: GPL-2.0
/* Fails to compile on kernels newer than 6.1, like a driver that lags the kernel API. */
#include <linux/module.h>
#include <linux/version.h>

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
static int dtkold_init(void) { return uses_an_api_removed_after_6_1(); }
#else
static int __init dtkold_init(void) { return 0; }
#endif

module_init(dtkold_init);
MODULE_LICENSE("GPL");
