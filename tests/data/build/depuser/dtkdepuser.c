// SPDX-License-Identifier: GPL-2.0
/* Uses dtkdepbase's exported symbol, so it only links when built after it. */
#include <linux/module.h>

int dtkdep_answer(void);

static int __init dtkdepuser_init(void)
{
	pr_info("dtkdepuser: %d\n", dtkdep_answer());
	return 0;
}

module_init(dtkdepuser_init);
MODULE_LICENSE("GPL");
MODULE_VERSION("1.0");
