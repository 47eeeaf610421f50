import { Migration } from '@mikro-orm/migrations';

export class Migration20261123152157_initial extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table \`users\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`name\` text not null, \`global_role\` text not null default 'user', \`token_hash\` text not null, \`email\` text null, \`active\` integer not null default true, \`deleted\` integer not null default false, \`ssh_public_key\` text null, primary key (\`id\`));`);
    this.addSql(`create unique index \`users_name_unique\` on \`users\` (\`name\`);`);
    this.addSql(`create unique index \`users_token_hash_unique\` on \`users\` (\`token_hash\`);`);

    this.addSql(`create table \`projects\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`name\` text not null, \`owner_id\` text not null, \`is_public\` integer not null default false, \`deleted\` integer not null default false, \`ssh_public_key\` text not null, \`ssh_private_key\` text not null, constraint \`projects_owner_id_foreign\` foreign key(\`owner_id\`) references \`users\`(\`id\`) on delete no action on update cascade, primary key (\`id\`));`);
    this.addSql(`create unique index \`projects_name_unique\` on \`projects\` (\`name\`);`);
    this.addSql(`create index \`projects_owner_id_index\` on \`projects\` (\`owner_id\`);`);

    this.addSql(`create table \`secrets\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`project_id\` text not null, \`name\` text not null, \`value\` text not null, constraint \`secrets_project_id_foreign\` foreign key(\`project_id\`) references \`projects\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`);
    this.addSql(`create index \`secrets_project_id_index\` on \`secrets\` (\`project_id\`);`);
    this.addSql(`create unique index \`secrets_project_id_name_unique\` on \`secrets\` (\`project_id\`, \`name\`);`);

    this.addSql(`create table \`runs\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`project_id\` text not null, \`user_id\` text not null, \`run_name\` text not null, \`status\` text not null default 'submitted', \`termination_reason\` text null, \`run_spec\` json not null, \`submitted_at\` datetime not null, \`finished_at\` datetime null, \`last_processed_at\` datetime not null, \`deleted\` integer not null default false, \`priority\` integer not null default 0, \`resubmission_attempt\` integer not null default 0, \`next_triggered_at\` datetime null, constraint \`runs_project_id_foreign\` foreign key(\`project_id\`) references \`projects\`(\`id\`) on delete cascade on update cascade, constraint \`runs_user_id_foreign\` foreign key(\`user_id\`) references \`users\`(\`id\`) on delete no action on update cascade, primary key (\`id\`));`);
    this.addSql(`create index \`runs_project_id_index\` on \`runs\` (\`project_id\`);`);
    this.addSql(`create index \`runs_user_id_index\` on \`runs\` (\`user_id\`);`);
    this.addSql(`create index \`runs_status_index\` on \`runs\` (\`status\`);`);
    this.addSql(`create index \`runs_project_id_run_name_index\` on \`runs\` (\`project_id\`, \`run_name\`);`);
    this.addSql(`create index \`runs_project_id_submitted_at_index\` on \`runs\` (\`project_id\`, \`submitted_at\`);`);

    this.addSql(`create table \`fleets\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`project_id\` text not null, \`name\` text not null, \`status\` text not null default 'submitted', \`spec\` json not null, \`deleted\` integer not null default false, constraint \`fleets_project_id_foreign\` foreign key(\`project_id\`) references \`projects\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`);
    this.addSql(`create index \`fleets_project_id_index\` on \`fleets\` (\`project_id\`);`);
    this.addSql(`create index \`fleets_status_index\` on \`fleets\` (\`status\`);`);
    this.addSql(`create index \`fleets_project_id_name_index\` on \`fleets\` (\`project_id\`, \`name\`);`);

    this.addSql(`create table \`join_tokens\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`project_id\` text not null, \`fleet_id\` text null, \`purpose\` text not null, \`token_hash\` text not null, \`expires_at\` datetime not null, \`revoked\` integer not null default false, \`used_at\` datetime null, constraint \`join_tokens_project_id_foreign\` foreign key(\`project_id\`) references \`projects\`(\`id\`) on delete cascade on update cascade, constraint \`join_tokens_fleet_id_foreign\` foreign key(\`fleet_id\`) references \`fleets\`(\`id\`) on delete set null on update cascade, primary key (\`id\`));`);
    this.addSql(`create index \`join_tokens_project_id_index\` on \`join_tokens\` (\`project_id\`);`);
    this.addSql(`create index \`join_tokens_fleet_id_index\` on \`join_tokens\` (\`fleet_id\`);`);
    this.addSql(`create unique index \`join_tokens_token_hash_unique\` on \`join_tokens\` (\`token_hash\`);`);

    this.addSql(`create table \`instances\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`fleet_id\` text null, \`project_id\` text not null, \`name\` text not null, \`instance_num\` integer not null default 0, \`status\` text not null default 'pending', \`termination_reason\` text null, \`termination_reason_message\` text null, \`unreachable\` integer not null default false, \`busy_blocks\` integer not null default 0, \`total_blocks\` integer not null default 1, \`host_info\` json null, \`price\` double null, \`backend\` text null, \`region\` text null, \`last_heartbeat_at\` datetime null, \`deleted\` integer not null default false, constraint \`instances_fleet_id_foreign\` foreign key(\`fleet_id\`) references \`fleets\`(\`id\`) on delete set null on update cascade, constraint \`instances_project_id_foreign\` foreign key(\`project_id\`) references \`projects\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`);
    this.addSql(`create index \`instances_fleet_id_index\` on \`instances\` (\`fleet_id\`);`);
    this.addSql(`create index \`instances_project_id_index\` on \`instances\` (\`project_id\`);`);
    this.addSql(`create index \`instances_status_index\` on \`instances\` (\`status\`);`);

    this.addSql(`create table \`jobs\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`run_id\` text not null, \`job_num\` integer not null default 0, \`replica_num\` integer not null default 0, \`submission_num\` integer not null default 0, \`status\` text not null default 'submitted', \`termination_reason\` text null, \`termination_reason_message\` text null, \`exit_status\` integer null, \`job_spec\` json not null, \`provisioning_data\` json null, \`instance_id\` text null, \`submitted_at\` datetime not null, \`finished_at\` datetime null, \`disconnected_at\` datetime null, \`last_processed_at\` datetime not null, constraint \`jobs_run_id_foreign\` foreign key(\`run_id\`) references \`runs\`(\`id\`) on delete cascade on update cascade, constraint \`jobs_instance_id_foreign\` foreign key(\`instance_id\`) references \`instances\`(\`id\`) on delete set null on update cascade, primary key (\`id\`));`);
    this.addSql(`create index \`jobs_run_id_index\` on \`jobs\` (\`run_id\`);`);
    this.addSql(`create index \`jobs_status_index\` on \`jobs\` (\`status\`);`);
    this.addSql(`create index \`jobs_instance_id_index\` on \`jobs\` (\`instance_id\`);`);
    this.addSql(`create index \`jobs_run_id_replica_num_job_num_submission_num_index\` on \`jobs\` (\`run_id\`, \`replica_num\`, \`job_num\`, \`submission_num\`);`);

    this.addSql(`create table \`code_blobs\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`project_id\` text not null, \`blob_hash\` text not null, \`blob\` blob null, \`path\` text null, constraint \`code_blobs_project_id_foreign\` foreign key(\`project_id\`) references \`projects\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`);
    this.addSql(`create index \`code_blobs_project_id_index\` on \`code_blobs\` (\`project_id\`);`);
    this.addSql(`create unique index \`code_blobs_project_id_blob_hash_unique\` on \`code_blobs\` (\`project_id\`, \`blob_hash\`);`);

    this.addSql(`create table \`members\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`project_id\` text not null, \`user_id\` text not null, \`project_role\` text not null default 'user', constraint \`members_project_id_foreign\` foreign key(\`project_id\`) references \`projects\`(\`id\`) on delete cascade on update cascade, constraint \`members_user_id_foreign\` foreign key(\`user_id\`) references \`users\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`);
    this.addSql(`create index \`members_project_id_index\` on \`members\` (\`project_id\`);`);
    this.addSql(`create index \`members_user_id_index\` on \`members\` (\`user_id\`);`);
    this.addSql(`create unique index \`members_project_id_user_id_unique\` on \`members\` (\`project_id\`, \`user_id\`);`);
  }

}
