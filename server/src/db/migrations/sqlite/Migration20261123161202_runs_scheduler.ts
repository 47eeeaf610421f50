import { Migration } from '@mikro-orm/migrations';

export class Migration20261123161202_runs_scheduler extends Migration {

  override async up(): Promise<void> {
    this.addSql(`drop index \`runs_project_id_submitted_at_index\`;`);

    this.addSql(`create index \`runs_project_id_submitted_at_id_index\` on \`runs\` (\`project_id\`, \`submitted_at\`, \`id\`);`);
    this.addSql(`create index \`runs_submitted_at_id_index\` on \`runs\` (\`submitted_at\`, \`id\`);`);

    this.addSql(`create index \`instances_project_id_status_index\` on \`instances\` (\`project_id\`, \`status\`);`);

    this.addSql(`alter table \`jobs\` add column \`blocks\` integer not null default 0;`);
    this.addSql(`alter table \`jobs\` add column \`running_at\` datetime null;`);
    this.addSql(`alter table \`jobs\` add column \`remove_at\` datetime null;`);
  }

}
