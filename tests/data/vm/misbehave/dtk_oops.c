// SPDX-License-Identifier: GPL-2.0
/* A module whose init dereferences NULL: the kernel oopses, kills modprobe and
 * goes on (tainted 'D'). dtk's VM test must say "crashed", not "refused". */
#include <linux/module.h>

/* volatile: the compiler must really load through the NULL pointer. */
static int *volatile dtk_oops_ptr;

static int __init dtk_oops_init(void)
{
	return *dtk_oops_ptr;
}
module_init(dtk_oops_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("dtk test module: NULL dereference in init");
