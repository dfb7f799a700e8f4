// SPDX-License-Identifier: GPL-2.0
/* Uses dtk-peer-core's export, so modpost records depends=dtk-peer-core. */
#include <linux/module.h>

int dtk_peer_answer(void);

static int __init dtk_peer_user_init(void)
{
	pr_info("dtk_peer_user: the answer is %d\n", dtk_peer_answer());
	return 0;
}

static void __exit dtk_peer_user_exit(void)
{
}

module_init(dtk_peer_user_init);
module_exit(dtk_peer_user_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("dtk test module depending on a dashed peer module");
