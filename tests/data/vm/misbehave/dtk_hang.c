// SPDX-License-Identifier: GPL-2.0
/* A module whose init never returns: modprobe stays in uninterruptible sleep,
 * which no signal ends. dtk's VM test must end with "timed-out", not hang. */
#include <linux/delay.h>
#include <linux/module.h>

static int __init dtk_hang_init(void)
{
	pr_info("dtk_hang: sleeping forever in init\n");
	for (;;)
		msleep(1000);
	return 0;
}
module_init(dtk_hang_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("dtk test module: init never returns");
