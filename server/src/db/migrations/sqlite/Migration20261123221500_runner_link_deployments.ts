import { Migration } from '@mikro-orm/migrations';

export class Migration20261123221500_runner_link_deployments extends Migration {

  override async up(): Promise<void> {
    this.addSql(`alter table \`runs\` add column \`deployment_num\` integer not null default 0;`);
    this.addSql(`alter table \`jobs\` add column \`runner_linked_at\` datetime null;`);
    this.addSql(`alter table \`jobs\` add column \`deployment_num\` integer not null default 0;`);
  }

}
