import { Migration } from '@mikro-orm/migrations';

export class Migration20261123221500_runner_link_deployments extends Migration {

  override async up(): Promise<void> {
    this.addSql(`alter table "runs" add column "deployment_num" int not null default 0;`);
    this.addSql(`alter table "jobs" add column "runner_linked_at" timestamptz null, add column "deployment_num" int not null default 0;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "runs" drop column "deployment_num";`);
    this.addSql(`alter table "jobs" drop column "runner_linked_at", drop column "deployment_num";`);
  }

}
