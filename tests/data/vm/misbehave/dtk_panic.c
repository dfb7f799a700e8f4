// SPDX-License-Identifier: GPL-2.0
/* A module that panics the kernel on load: dtk's VM test must say "crashed". */
#include <linux/kernel.h>
#include <linux/module.h>

static int __init dtk_panic_init(void)
{
	panic("dtk_panic: panicking on purpose");
	return 0;
}
module_init(dtk_panic_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("dtk test module: panics on load");
