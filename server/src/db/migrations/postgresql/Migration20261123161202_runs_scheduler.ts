import { Migration } from '@mikro-orm/migrations';

export class Migration20261123161202_runs_scheduler extends Migration {

  override async up(): Promise<void> {
    this.addSql(`drop index "runs_project_id_submitted_at_index";`);

    this.addSql(`create index "runs_project_id_submitted_at_id_index" on "runs" ("project_id", "submitted_at", "id");`);
    this.addSql(`create index "runs_submitted_at_id_index" on "runs" ("submitted_at", "id");`);

    this.addSql(`create index "instances_project_id_status_index" on "instances" ("project_id", "status");`);

    this.addSql(`alter table "jobs" add column "blocks" int not null default 0, add column "running_at" timestamptz null, add column "remove_at" timestamptz null;`);
    this.addSql(`create index "jobs_instance_id_index" on "jobs" ("instance_id");`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop index "instances_project_id_status_index";`);

    this.addSql(`drop index "jobs_instance_id_index";`);
    this.addSql(`alter table "jobs" drop column "blocks", drop column "running_at", drop column "remove_at";`);

    this.addSql(`drop index "runs_project_id_submitted_at_id_index";`);
    this.addSql(`drop index "runs_submitted_at_id_index";`);

    this.addSql(`create index "runs_project_id_submitted_at_index" on "runs" ("project_id", "submitted_at");`);
  }

}
