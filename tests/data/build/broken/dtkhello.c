// SPDX-License-Identifier: GPL-2.0
/* A minimal DKMS module for dtk's tests; `greeting` proves parameters work. */
#include <linux/module.h>

static char *greeting = "hello";
module_param(greeting, charp, 0444);

static int __init dtkhello_init(void)
{
	pr_info("dtkhello: %s\n", greeting);
	return 0;
}

static void __exit dtkhello_exit(void)
{
}

module_init(dtkhello_init);
module_exit(dtkhello_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("0.3");
